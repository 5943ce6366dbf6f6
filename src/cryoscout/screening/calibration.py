"""Monotone calibration of predicted scores, fitted on squares held out from training.

A regression model trained with a squared loss pulls both ends of the 0-4 scale
towards the middle (a clean square gets a cracking score of 0.7). A monotone
(isotonic) map from predicted to true scores, fitted on labeled squares of
atlases the model did not train on, moves each prediction to the mean true
score of squares predicted alike. It is stored as two arrays (the map's
breakpoints) and applied by linear interpolation, as
:class:`sklearn.isotonic.IsotonicRegression` predicts.

An isotonic map is flat wherever the held-out squares cannot tell predictions
apart on average, most of all at the top: every square predicted above some
value gets the same overall score, and the operator's top 20 would be chosen
among them by square number. So the fitted map is blended with a straight
line through the range of the predictions (weight ``TIE_BREAK``, 1 %): it moves
no score by more than 0.04 and is strictly increasing over the predictions'
range, which keeps the model's own order where the isotonic map would tie it.

For a defect score (cracking, contamination) 0 means something else than a
small number: no defect at all, which most squares are. A map may also have a
*zero point*: below a cut in the predicted score, where squares are more
likely free of the defect than not (the isotonic estimate of
``P(true > 0 | predicted)``, fitted on the same held-out squares, is below
one half), the calibrated score is exactly 0. Those squares tie, as their
truth does, instead of being spread over small values that rank them by
noise; the order of every other square is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Weight of the straight line blended into a fitted map, so that it never ties two predictions.
TIE_BREAK = 0.01


@dataclass
class MonotoneMap:
    """A non-decreasing piecewise-linear map ``x -> y``, constant beyond its ends.

    Attributes
    ----------
    x
        ``(k,)`` increasing breakpoints (predicted scores).
    y
        ``(k,)`` non-decreasing values at the breakpoints (calibrated scores).
    zero_below
        Predicted scores below this calibrate to exactly 0 (the zero point;
        ``-inf``: none).
    """

    x: np.ndarray
    y: np.ndarray
    zero_below: float = -np.inf

    @classmethod
    def fit(
        cls,
        predicted: np.ndarray,
        true: np.ndarray,
        low: float = 0.0,
        high: float = 4.0,
        zero_point: bool = False,
    ) -> MonotoneMap:
        """Isotonic regression of ``true`` on ``predicted`` (NaN pairs ignored), tie-broken.

        Parameters
        ----------
        predicted, true
            ``(n,)`` scores of the same squares.
        low, high
            Bounds of the calibrated scores.
        zero_point
            Also fit the zero point (module docstring): the lowest predicted
            score at which at least half the squares have ``true > 0``.

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
        x, y = np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_)
        if x[-1] > x[0]:  # linear between the breakpoints, so blending them blends the maps
            line = low + (high - low) * (x - x[0]) / (x[-1] - x[0])
            y = (1 - TIE_BREAK) * y + TIE_BREAK * line
        return cls(x=x, y=y, zero_below=_zero_cut(p[ok], t[ok] > 0) if zero_point else -np.inf)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Calibrated ``values`` (any shape)."""
        v = np.asarray(values, dtype=np.float64)
        out = np.interp(v, self.x, self.y)
        return np.where(v < self.zero_below, 0.0, out)

    def to_record(self) -> dict:
        """Tensors for a ``weights_only`` model file."""
        import torch

        cut = torch.tensor(float(self.zero_below), dtype=torch.float64)
        return {"x": torch.from_numpy(self.x.copy()), "y": torch.from_numpy(self.y.copy()),
                "zero_below": cut}  # fmt: skip

    @classmethod
    def from_record(cls, record: dict) -> MonotoneMap:
        """Inverse of :meth:`to_record`; raises ``ValueError`` unless the map is monotone."""
        x = np.asarray(record["x"].numpy(), np.float64)
        y = np.asarray(record["y"].numpy(), np.float64)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
            raise ValueError("calibration breakpoints must be two 1-D arrays of one length")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("calibration map is not monotone")
        cut = float(record["zero_below"]) if "zero_below" in record else -np.inf  # older files
        if np.isnan(cut) or cut == np.inf:
            raise ValueError(f"calibration zero point must be finite or -inf, not {cut}")
        return cls(x=x, y=y, zero_below=cut)


def _zero_cut(predicted: np.ndarray, defect: np.ndarray) -> float:
    """Lowest prediction at which at least half the squares have the defect (``-inf``: none)."""
    from sklearn.isotonic import IsotonicRegression

    if defect.all() or not defect.any():
        return -np.inf
    iso = IsotonicRegression(y_min=0.0, y_max=1.0).fit(predicted, defect.astype(np.float64))
    x, share = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
    above = np.flatnonzero(share >= 0.5)
    if len(above) == 0:
        return float(x[-1]) + 1.0  # never more likely than not: every square is clean
    k = int(above[0])
    if k == 0:
        return -np.inf  # already at the lowest prediction
    # where the piecewise-linear estimate crosses one half (share[k - 1] < 0.5 <= share[k])
    return float(np.interp(0.5, share[k - 1 : k + 1], x[k - 1 : k + 1]))
