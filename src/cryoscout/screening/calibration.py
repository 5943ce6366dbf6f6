"""Monotone calibration of predicted scores, fitted on squares held out from training.

A regression model trained with a squared loss pulls both ends of the 0-4 scale
towards the middle (a clean square gets a cracking score of 0.7). A monotone
(isotonic) map from predicted to true scores, fitted on labeled squares of
atlases the model did not train on, moves each prediction to the mean true
score of squares predicted alike, without changing the ranking. It is stored as
two arrays (the map's breakpoints) and applied by linear interpolation, as
:class:`sklearn.isotonic.IsotonicRegression` predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MonotoneMap:
    """A non-decreasing piecewise-linear map ``x -> y``, constant beyond its ends.

    Attributes
    ----------
    x
        ``(k,)`` increasing breakpoints (predicted scores).
    y
        ``(k,)`` non-decreasing values at the breakpoints (calibrated scores).
    """

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def fit(cls, predicted: np.ndarray, true: np.ndarray, low: float = 0.0, high: float = 4.0):
        """Isotonic regression of ``true`` on ``predicted`` (NaN pairs ignored).

        Parameters
        ----------
        predicted, true
            ``(n,)`` scores of the same squares.
        low, high
            Bounds of the calibrated scores.

        Returns
        -------
        MonotoneMap
        """
        from sklearn.isotonic import IsotonicRegression

        p = np.asarray(predicted, dtype=np.float64)
        t = np.asarray(true, dtype=np.float64)
        ok = ~(np.isnan(p) | np.isnan(t))
        if ok.sum() < 2:
            raise ValueError("calibration needs at least two labeled squares")
        iso = IsotonicRegression(y_min=low, y_max=high, out_of_bounds="clip").fit(p[ok], t[ok])
        return cls(x=np.asarray(iso.X_thresholds_, np.float64), y=np.asarray(iso.y_thresholds_))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Calibrated ``values`` (any shape)."""
        return np.interp(np.asarray(values, dtype=np.float64), self.x, self.y)

    def to_record(self) -> dict:
        """Tensors for a ``weights_only`` model file."""
        import torch

        return {"x": torch.from_numpy(self.x.copy()), "y": torch.from_numpy(self.y.copy())}

    @classmethod
    def from_record(cls, record: dict) -> MonotoneMap:
        """Inverse of :meth:`to_record`; raises ``ValueError`` unless the map is monotone."""
        x = np.asarray(record["x"].numpy(), np.float64)
        y = np.asarray(record["y"].numpy(), np.float64)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
            raise ValueError("calibration breakpoints must be two 1-D arrays of one length")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("calibration map is not monotone")
        return cls(x=x, y=y)
