"""The paper's metric: mean absolute difference between true and predicted scores."""

from __future__ import annotations

import numpy as np

from cryoscout.screening.model import SCORES


def mean_abs_diff(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean absolute difference per score, ignoring missing (NaN) labels.

    Parameters
    ----------
    pred, true
        ``(n, 5)`` scores in :data:`~cryoscout.screening.model.SCORES` order.

    Returns
    -------
    dict
        Score name -> mean ``|true - pred|`` over labeled squares (NaN when none is labeled).
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != len(SCORES):
        raise ValueError(
            f"pred and true must both be (n, {len(SCORES)}), not {pred.shape}, {true.shape}"
        )
    err = np.abs(pred - true)
    out = {}
    for j, name in enumerate(SCORES):
        valid = ~np.isnan(err[:, j])
        out[name] = float(err[valid, j].mean()) if valid.any() else float("nan")
    return out
