"""Found squares against known ones: one-to-one matching, precision, recall, centre error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Matching:
    """One-to-one pairs between found and true positions.

    Attributes
    ----------
    found_index, truth_index
        ``(m,)`` indices of the matched pairs into ``found_xy`` and ``truth_xy``.
    distance
        ``(m,)`` centre distance of each pair in pixels.
    n_found, n_truth
        Number of found and true positions.
    """

    found_index: np.ndarray
    truth_index: np.ndarray
    distance: np.ndarray
    n_found: int
    n_truth: int

    @property
    def precision(self) -> float:
        """Matched fraction of the found positions (1.0 when nothing was found)."""
        return len(self.found_index) / self.n_found if self.n_found else 1.0

    @property
    def recall(self) -> float:
        """Matched fraction of the true positions (1.0 when there were none)."""
        return len(self.truth_index) / self.n_truth if self.n_truth else 1.0

    @property
    def mean_error(self) -> float:
        """Mean centre distance of the matched pairs (NaN without pairs)."""
        return float(np.mean(self.distance)) if len(self.distance) else float("nan")

    @property
    def median_error(self) -> float:
        """Median centre distance of the matched pairs (NaN without pairs)."""
        return float(np.median(self.distance)) if len(self.distance) else float("nan")

    def truth_for_found(self) -> np.ndarray:
        """``(n_found,)`` index of the true position matched to each found one, -1 if none."""
        out = np.full(self.n_found, -1, dtype=int)
        out[self.found_index] = self.truth_index
        return out


def match_to_truth(found_xy: np.ndarray, truth_xy: np.ndarray, max_dist_px: float) -> Matching:
    """Pair found and true positions one-to-one, minimising the total distance.

    The Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`) on
    the distance matrix; pairs further apart than ``max_dist_px`` are not pairs.

    Parameters
    ----------
    found_xy
        ``(n, 2)`` found positions ``(x, y)``.
    truth_xy
        ``(m, 2)`` true positions ``(x, y)``.
    max_dist_px
        Largest centre distance of a pair (half a pitch is natural for squares).

    Returns
    -------
    Matching

    Examples
    --------
    >>> m = match_to_truth(np.array([[0, 0], [10, 0]]), np.array([[1, 0]]), 3.0)
    >>> m.precision, m.recall
    (0.5, 1.0)
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    found = np.asarray(found_xy, float).reshape(-1, 2)
    truth = np.asarray(truth_xy, float).reshape(-1, 2)
    empty = np.zeros(0, int)
    if len(found) == 0 or len(truth) == 0:
        return Matching(empty, empty, np.zeros(0), len(found), len(truth))
    dist = cdist(found, truth)
    # Pairs beyond the limit cost more than any allowed pair, so they are chosen last
    # and then dropped.
    cost = np.where(dist <= max_dist_px, dist, max_dist_px * 1e3 + dist)
    rows, cols = linear_sum_assignment(cost)
    keep = dist[rows, cols] <= max_dist_px
    rows, cols = rows[keep], cols[keep]
    return Matching(rows, cols, dist[rows, cols], len(found), len(truth))
