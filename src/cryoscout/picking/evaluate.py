"""Picks against ground truth: the one-to-one report (P/R/F1) and the CZII challenge score.

Two metrics, each what its name says:

- :func:`evaluate_picks`, the default report: within each class (and tomogram), picks and
  true centres are paired one-to-one, a pair counting when its distance is at most the
  class radius (inclusive); the pairing maximises the number of hits (then minimises the
  total distance) with the Hungarian algorithm on each connected group of candidate pairs.
  Precision, recall and F1 per class, and micro-averaged over classes. A true centre is
  found at most once and a pick finds at most one centre, so the counts always satisfy
  ``tp + fp = picks`` and ``tp + fn = truths``.
- :func:`czii_score`, the score of the CZII cryo-ET object identification challenge
  (Kaggle, 2024-25), reproduced exactly: for each particle type of the *truth*, a true
  centre is found when any pick of that type lies within ``radius * 0.5`` of it (distance
  ``<=``, their ``distance_multiplier``); tp = true centres found, fp = picks - tp,
  fn = true centres - tp, computed per tomogram and summed over all tomograms; precision,
  recall and F-beta with beta = 4 per type from the summed counts; the score is
  ``sum(weight * F-beta) / sum(all weights)`` (all weights given, also those of types
  absent from the truth; the plain mean over the truth's types when no weights are
  given). Types that occur only in the picks are ignored, as are picks in tomograms
  without truth. The matching is many-to-one: one pick near two true centres finds both,
  and fp can then drop below zero in that tomogram (precision above 1), exactly as in the
  official code.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ["precision", "recall", "f1", "tp", "fp", "fn"]
CZII_METRICS = ["precision", "recall", "fbeta", "tp", "fp", "fn", "weight"]
_COUNTS = ("tp", "fp", "fn")


def stack_tomograms(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Several tomograms' tables (picks or truth) as one, with the tomogram's position in
    ``tables`` as ``tomo``: the column by which the scores here match within a tomogram.
    """
    return pd.concat([t.assign(tomo=i) for i, t in enumerate(tables)], ignore_index=True)


def _plain(row, keys) -> dict:
    return {k: (int(row[k]) if k in _COUNTS else float(row[k])) for k in keys}


@dataclass
class EvaluationResult:
    """Scores of a set of picks under one-to-one matching.

    Attributes
    ----------
    per_class
        DataFrame indexed by class (the labels of the ``class`` column: numbers or names)
        with columns ``precision, recall, f1, tp, fp, fn, radius``.
    overall
        Same keys (without ``radius``): tp/fp/fn summed over classes (micro average).
    matches
        One row per hit: ``class, pick, truth, distance`` (row positions in the inputs).
    """

    per_class: pd.DataFrame
    overall: dict
    matches: pd.DataFrame

    def to_dict(self) -> dict:
        """``{"overall": {...}, "per_class": {class: {...}}}`` with plain Python values."""
        return {
            "overall": _plain(self.overall, METRICS),
            "per_class": {_key(c): _plain(r, METRICS) for c, r in self.per_class.iterrows()},
        }


@dataclass
class CziiResult:
    """The CZII challenge score.

    Attributes
    ----------
    score
        Weighted mean of the per-class F-beta, divided by the sum of all weights.
    per_class
        DataFrame indexed by the truth's classes with columns
        ``precision, recall, fbeta, tp, fp, fn, weight`` (counts summed over tomograms).
    beta
        The F-beta beta (4).
    """

    score: float
    per_class: pd.DataFrame
    beta: float = 4.0

    def to_dict(self) -> dict:
        """``{"score": ..., "beta": 4.0, "per_class": {class: {...}}}``, plain values."""
        return {
            "score": float(self.score),
            "beta": float(self.beta),
            "per_class": {_key(c): _plain(r, CZII_METRICS) for c, r in self.per_class.iterrows()},
        }


def _key(label) -> str:
    return str(int(label)) if isinstance(label, (int, np.integer)) else str(label)


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


def count_many_to_one(picks: np.ndarray, truth: np.ndarray, radius: float) -> tuple[int, int, int]:
    """tp, fp, fn as the CZII challenge counts them in one tomogram.

    Parameters
    ----------
    picks, truth
        ``(n, 3)`` and ``(m, 3)`` coordinates of one class in one tomogram.
    radius
        Largest distance (inclusive) at which a pick finds a true centre.

    Returns
    -------
    tuple of int
        tp = true centres with any pick within ``radius``; fp = ``n - tp`` (negative when
        picks find more centres than there are picks); fn = ``m - tp``.
    """
    from scipy.spatial import cKDTree

    n, m = len(picks), len(truth)
    if m == 0:
        return 0, n, 0
    if n == 0:
        return 0, 0, m
    near = cKDTree(picks).query_ball_tree(cKDTree(truth), r=radius)
    tp = len({j for js in near for j in js})
    return tp, n - tp, m - tp


def _scores(tp: int, fp: int, fn: int, beta: float = 1.0) -> tuple[float, float, float]:
    """Precision, recall and F-beta; each 0 when its denominator is 0."""
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    b2 = beta * beta
    denom = b2 * precision + recall
    f = (1 + b2) * precision * recall / denom if precision + recall > 0 else 0.0
    return precision, recall, f


def _groups(picks: pd.DataFrame, truth: pd.DataFrame, c) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row positions of class ``c`` in picks and truth, per tomogram of the truth."""
    has_tomo = "tomo" in truth.columns
    p_cls = picks["class"].to_numpy() == c if len(picks) else np.zeros(0, bool)
    t_cls = truth["class"].to_numpy() == c
    if not has_tomo:
        return [(np.flatnonzero(p_cls), np.flatnonzero(t_cls))]
    p_tomo = picks["tomo"].to_numpy() if len(picks) else np.zeros(0, object)
    t_tomo = truth["tomo"].to_numpy()
    return [
        (np.flatnonzero(p_cls & (p_tomo == tomo)), np.flatnonzero(t_cls & (t_tomo == tomo)))
        for tomo in pd.unique(t_tomo)
    ]


def _xyz(df: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    if len(rows) == 0:
        return np.zeros((0, 3))
    return df.iloc[rows][["x", "y", "z"]].to_numpy(float)


def _radius_of(radius: float | Mapping, c) -> float:
    r = radius.get(c) if isinstance(radius, Mapping) else radius
    if r is None:
        raise ValueError(f"no radius for class {c}")
    return float(r)


def _check_tomo(picks: pd.DataFrame, truth: pd.DataFrame) -> None:
    if ("tomo" in truth.columns) != ("tomo" in picks.columns) and len(picks):
        raise ValueError("picks and truth must both have a 'tomo' column, or neither")


def evaluate_picks(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    radius: float | Mapping[Hashable, float],
) -> EvaluationResult:
    """Precision, recall and F1 of picks against true centres under one-to-one matching.

    Parameters
    ----------
    picks
        ``class, x, y, z`` (voxels), and ``tomo`` when several tomograms are scored
        together; extra columns are ignored.
    truth
        ``class, x, y, z`` (voxels), and ``tomo`` likewise.
    radius
        Hit radius in voxels (a hit is at most this far): one value, or ``{class: radius}``
        for every class of the truth.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        A class without a radius; a ``tomo`` column on one side only.
    """
    _check_tomo(picks, truth)
    labels = set(truth["class"]).union(picks["class"]) if len(picks) else set(truth["class"])
    rows, match_rows = [], []
    truth_labels = set(truth["class"])
    for c in sorted(labels):
        # A class only the picks have needs no radius: all its picks are false positives.
        r = _radius_of(radius, c) if c in truth_labels else np.nan
        tp = fp = fn = 0
        groups = _groups(picks, truth, c)
        if "tomo" in truth.columns and len(picks):
            # Picks in tomograms without truth are all false positives.
            in_truth = picks["tomo"].isin(set(truth["tomo"])).to_numpy()
            fp += int(((picks["class"].to_numpy() == c) & ~in_truth).sum())
        for p_sel, t_sel in groups:
            hits = match_one_to_one(_xyz(picks, p_sel), _xyz(truth, t_sel), r)
            tp += len(hits)
            fp += len(p_sel) - len(hits)
            fn += len(t_sel) - len(hits)
            match_rows += [
                {"class": c, "pick": int(p_sel[a]), "truth": int(t_sel[b]), "distance": d}
                for a, b, d in hits
            ]
        precision, recall, f1 = _scores(tp, fp, fn)
        rows.append(
            {
                "class": c,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "radius": r,
            }
        )
    per_class = pd.DataFrame(rows, columns=["class", *METRICS, "radius"]).set_index("class")
    tp, fp, fn = (int(per_class[k].sum()) for k in _COUNTS)
    precision, recall, f1 = _scores(tp, fp, fn)
    overall = {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
    matches = pd.DataFrame(match_rows, columns=["class", "pick", "truth", "distance"])
    return EvaluationResult(per_class=per_class, overall=overall, matches=matches)


def czii_score(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    radius: float | Mapping[Hashable, float],
    weights: Mapping[Hashable, float] | None = None,
    distance_multiplier: float = 0.5,
    beta: float = 4.0,
) -> CziiResult:
    """The CZII cryo-ET object identification challenge score (see the module docstring).

    Parameters
    ----------
    picks
        ``class, x, y, z`` and, for several tomograms, ``tomo``.
    truth
        ``class, x, y, z`` and ``tomo`` likewise (in the same units as ``radius``).
    radius
        Particle radius per class of the truth (``{class: radius}``), or one value.
    weights
        ``{class: weight}``; must name every class of the truth and may name others (their
        weights still count in the denominator, as in the challenge: apo-ferritin,
        ribosome and virus-like particle 1, beta-galactosidase and thyroglobulin 2,
        beta-amylase 0). Default: every class of the truth weighs the same.
    distance_multiplier
        A pick finds a true centre within ``radius * distance_multiplier`` (0.5).
    beta
        The F-beta beta (4).

    Returns
    -------
    CziiResult

    Raises
    ------
    ValueError
        A class of the truth without a radius or a weight; weights that sum to zero.
    """
    _check_tomo(picks, truth)
    classes = sorted(pd.unique(truth["class"]))
    if weights is not None:
        missing = [c for c in classes if c not in weights]
        if missing:
            raise ValueError(f"no weight for class {missing[0]}")
        total = float(sum(weights.values()))
        if total == 0:
            raise ValueError("the weights sum to zero")
    else:
        total = float(len(classes))
    rows = []
    for c in classes:
        r = _radius_of(radius, c) * distance_multiplier
        counts = np.zeros(3, int)
        for p_sel, t_sel in _groups(picks, truth, c):
            counts += count_many_to_one(_xyz(picks, p_sel), _xyz(truth, t_sel), r)
        tp, fp, fn = (int(v) for v in counts)
        precision, recall, fbeta = _scores(tp, fp, fn, beta)
        w = float(weights[c]) if weights is not None else 1.0
        rows.append(
            {
                "class": c,
                "precision": precision,
                "recall": recall,
                "fbeta": fbeta,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "weight": w,
            }
        )
    per_class = pd.DataFrame(rows, columns=["class", *CZII_METRICS]).set_index("class")
    score = float((per_class["fbeta"] * per_class["weight"]).sum() / total) if total else 0.0
    return CziiResult(score=score, per_class=per_class, beta=beta)
