"""Picks against ground truth: one-to-one matching, precision, recall, F1 and F-beta(4).

Matching: within each class, a pick is a hit when it lies within the class radius of a
true centre not already matched; the assignment is one-to-one and maximises the number of
hits (then minimises total distance) with the Hungarian algorithm on each connected group
of candidate pairs.

F-beta(4) follows the CZII cryo-ET object identification challenge (Kaggle, 2024-25):
a hit needs a distance below ``radius * 0.5`` (their ``distance_multiplier``), precision
and recall are computed per particle type from tp/fp/fn summed over tomograms, F-beta
uses beta = 4, and the overall score is the weighted mean of the per-type F-beta (their
weights were 1 for easy and 2 for hard types, 0 for unscored ones; here equal weights
unless ``weights`` is given). One difference: their matcher counts each true particle
hit at most once but does not pair picks one-to-one; ours does, which only matters when
two true centres lie within half a radius of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ["precision", "recall", "f1", "fbeta4", "tp", "fp", "fn"]


@dataclass
class EvaluationResult:
    """Scores of a set of picks.

    Attributes
    ----------
    per_class
        DataFrame indexed by class with columns ``precision, recall, f1, fbeta4, tp, fp, fn``
        (+ ``radius``); tp/fp/fn at the full radius, ``fbeta4`` at half the radius.
    overall
        Same keys: tp/fp/fn summed over classes (micro average) for precision/recall/F1;
        ``fbeta4`` the weighted mean of the per-class values (CZII).
    matches
        One row per hit: ``class, pick, truth, distance`` (row positions in the inputs).
    """

    per_class: pd.DataFrame
    overall: dict
    matches: pd.DataFrame

    def to_dict(self) -> dict:
        """``{"overall": {...}, "per_class": {class: {...}}}`` with plain Python numbers."""

        def plain(row) -> dict:
            return {k: (int(row[k]) if k in ("tp", "fp", "fn") else float(row[k])) for k in METRICS}

        return {
            "overall": plain(self.overall),
            "per_class": {str(int(c)): plain(r) for c, r in self.per_class.iterrows()},
        }


def match_one_to_one(picks: np.ndarray, truth: np.ndarray, radius: float) -> list[tuple]:
    """Maximum one-to-one matching of picks to true centres within ``radius``.

    Parameters
    ----------
    picks, truth
        ``(n, 3)`` and ``(m, 3)`` coordinates.
    radius
        Largest distance of a hit (inclusive).

    Returns
    -------
    list of tuple
        ``(pick_index, truth_index, distance)`` for each hit.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if len(picks) == 0 or len(truth) == 0:
        return []
    pairs = cKDTree(picks).sparse_distance_matrix(cKDTree(truth), radius, output_type="ndarray")
    if len(pairs) == 0:
        return []
    i, j, d = pairs["i"], pairs["j"], pairs["v"]
    n, m = len(picks), len(truth)
    # Connected groups of picks and truths; Hungarian on each small group.
    g = coo_matrix((np.ones(len(i)), (i, n + j)), shape=(n + m, n + m))
    _, label = connected_components(g, directed=False)
    out = []
    for comp in np.unique(label[i]):
        sel = label[i] == comp
        pi, ti, di = i[sel], j[sel], d[sel]
        up, ut = np.unique(pi), np.unique(ti)
        big = 1e6 + radius * (len(up) + len(ut))  # any hit beats any distance saving
        cost = np.full((len(up), len(ut)), big)
        cost[np.searchsorted(up, pi), np.searchsorted(ut, ti)] = di
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] < big:
                out.append((int(up[r]), int(ut[c]), float(cost[r, c])))
    return out


def _metrics(tp: int, fp: int, fn: int, fbeta: float) -> dict[str, float | int]:
    """One row of :data:`METRICS`: precision, recall and F1 from the counts, plus F-beta."""
    precision, recall, f1 = _scores(tp, fp, fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fbeta4": fbeta,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _scores(tp: int, fp: int, fn: int, beta: float = 1.0) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    b2 = beta * beta
    denom = b2 * precision + recall
    f = (1 + b2) * precision * recall / denom if denom > 0 else 0.0
    return precision, recall, f


def evaluate_picks(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    radius: float | dict[int, float],
    weights: dict[int, float] | None = None,
    beta: float = 4.0,
    fbeta_radius_factor: float = 0.5,
) -> EvaluationResult:
    """Precision, recall, F1 and F-beta(4) of picks against true centres, per class.

    Parameters
    ----------
    picks
        ``class, x, y, z`` (voxels); extra columns are ignored.
    truth
        ``class, x, y, z`` (voxels).
    radius
        Hit radius in voxels: one value, or ``{class: radius}`` for every class present.
    weights
        Per-class weights of the overall F-beta (default: equal).
    beta
        The F-beta beta (4, as in the CZII challenge).
    fbeta_radius_factor
        F-beta hits must lie within ``radius * fbeta_radius_factor`` (0.5 in CZII).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        A class without a radius.
    """
    classes = sorted(
        set(truth["class"].astype(int)).union(picks["class"].astype(int))
        if len(picks)
        else set(truth["class"].astype(int))
    )
    rows, match_rows = [], []
    for c in classes:
        r = radius.get(c) if isinstance(radius, dict) else radius
        if r is None:
            raise ValueError(f"no radius for class {c}")
        p_sel = np.flatnonzero(picks["class"].to_numpy().astype(int) == c) if len(picks) else []
        t_sel = np.flatnonzero(truth["class"].to_numpy().astype(int) == c)
        p = picks.iloc[p_sel][["x", "y", "z"]].to_numpy(float) if len(p_sel) else np.zeros((0, 3))
        t = truth.iloc[t_sel][["x", "y", "z"]].to_numpy(float)
        hits = match_one_to_one(p, t, float(r))
        tp = len(hits)
        fp, fn = len(p) - tp, len(t) - tp
        tp_b = len(match_one_to_one(p, t, float(r) * fbeta_radius_factor))
        _, _, fb = _scores(tp_b, len(p) - tp_b, len(t) - tp_b, beta)
        rows.append({"class": c, **_metrics(tp, fp, fn, fb), "radius": float(r)})
        match_rows += [
            {"class": c, "pick": int(p_sel[a]), "truth": int(t_sel[b]), "distance": d}
            for a, b, d in hits
        ]
    per_class = pd.DataFrame(rows, columns=["class", *METRICS, "radius"]).set_index("class")
    tp, fp, fn = (int(per_class[k].sum()) for k in ("tp", "fp", "fn"))
    if len(per_class):
        w = np.array([(weights or {}).get(c, 1.0) for c in per_class.index], float)
        fb = float((per_class["fbeta4"] * w).sum() / w.sum()) if w.sum() > 0 else 0.0
    else:
        fb = 0.0
    overall = _metrics(tp, fp, fn, fb)
    matches = pd.DataFrame(match_rows, columns=["class", "pick", "truth", "distance"])
    return EvaluationResult(per_class=per_class, overall=overall, matches=matches)
