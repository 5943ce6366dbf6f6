"""Clustering baseline for particle centres: scikit-learn MeanShift on segmented voxels.

``method="deepfinder"`` (the default) clusters as DeepFinder's published ``Cluster.launch``
does: all object voxels of every class together, one flat-kernel MeanShift with the
bandwidth set to the average particle radius and ``bin_seeding=True``; each cluster is one
pick whose class is the majority class of its voxels, scored by its size in voxels.
``method="per-class"`` is a slower variant: each class clustered on its own with its own
bandwidth, every voxel a seed (bin seeding off). It is the reference MP-NMS is compared
with in ``benchmarks/postprocess.py``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from cryoscout.picking.mpnms import PICK_COLUMNS

METHODS = ("deepfinder", "per-class")


def _empty() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype=float) for col in PICK_COLUMNS}).astype(
        {"class": int}
    )


def _frame(cls: np.ndarray, centres_zyx: np.ndarray, sizes: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "class": cls.astype(int),
            "x": centres_zyx[:, 2],
            "y": centres_zyx[:, 1],
            "z": centres_zyx[:, 0],
            "score": sizes.astype(float),
        }
    )


def meanshift_picks(
    prob_or_classes,
    radius: float | dict[int, float],
    min_size: int = 1,
    method: Literal["deepfinder", "per-class"] = "deepfinder",
    bin_seeding: bool | None = None,
    classes: list[int] | None = None,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Particle centres by MeanShift clustering of segmented voxels.

    Parameters
    ----------
    prob_or_classes
        ``(z, y, x)`` integer class map (0 = background) or ``(C, z, y, x)`` probabilities
        (channel 0 background; binarized by argmax).
    radius
        Bandwidth in voxels: one value, or ``{class: radius}``. With ``"deepfinder"`` a
        per-class dict is reduced to its mean over ``classes`` (DeepFinder takes one
        "average object radius"); with ``"per-class"`` each class uses its own.
    min_size
        Drop clusters with fewer voxels (DeepFinder's cluster-size threshold).
    method
        ``"deepfinder"``: all classes clustered together, class by majority vote.
        ``"per-class"``: each class clustered on its own.
    bin_seeding
        scikit-learn's seeding on a grid of bandwidth-sized bins. Default: on for
        ``"deepfinder"`` (as DeepFinder runs it), off for ``"per-class"`` (every voxel seeds).
    classes
        Classes to cluster (voxels of other classes count as background); default all present.
    n_jobs
        Passed to :class:`sklearn.cluster.MeanShift`.

    Returns
    -------
    pandas.DataFrame
        ``class, x, y, z, score`` with score = cluster size in voxels, sorted by class,
        then score descending.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    """
    from sklearn.cluster import MeanShift

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if bin_seeding is None:
        bin_seeding = method == "deepfinder"
    arr = np.asarray(prob_or_classes)
    class_map = arr.argmax(0) if arr.ndim == 4 else arr.astype(np.int64)
    present = [int(c) for c in np.unique(class_map) if c > 0]
    wanted = sorted(classes) if classes is not None else present
    if not wanted:
        return _empty()

    def bandwidth(c: int) -> float:
        return float(radius[c] if isinstance(radius, dict) else radius)

    frames = []
    if method == "deepfinder":
        keep = np.isin(class_map, wanted)
        pts = np.argwhere(keep).astype(np.float64)  # (n, 3) z, y, x
        if len(pts):
            bw = float(np.mean([bandwidth(c) for c in wanted]))
            ms = MeanShift(bandwidth=bw, bin_seeding=bin_seeding, n_jobs=n_jobs).fit(pts)
            n_clusters = len(ms.cluster_centers_)
            # Majority vote per cluster; a tie goes to the lowest class, as in DeepFinder.
            lut = np.zeros(max(int(class_map.max()), max(wanted)) + 1, np.int64)
            lut[wanted] = np.arange(len(wanted))
            votes = np.zeros((n_clusters, len(wanted)), np.int64)
            np.add.at(votes, (ms.labels_, lut[class_map[keep]]), 1)
            sizes = votes.sum(1)
            ok = sizes >= min_size
            cls = np.asarray(wanted)[votes.argmax(1)]
            frames.append(_frame(cls[ok], ms.cluster_centers_[ok], sizes[ok]))
    else:
        for c in wanted:
            pts = np.argwhere(class_map == c).astype(np.float64)  # (n, 3) z, y, x
            if len(pts) == 0:
                continue
            ms = MeanShift(bandwidth=bandwidth(c), bin_seeding=bin_seeding, n_jobs=n_jobs)
            ms.fit(pts)
            sizes = np.bincount(ms.labels_, minlength=len(ms.cluster_centers_))
            ok = sizes >= min_size
            frames.append(_frame(np.full(ok.sum(), c), ms.cluster_centers_[ok], sizes[ok]))
    if not frames:
        return _empty()
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["class", "score"], ascending=[True, False], ignore_index=True)
