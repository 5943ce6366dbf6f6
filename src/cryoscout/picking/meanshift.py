"""Clustering baseline for particle centres: scikit-learn MeanShift on segmented voxels.

As in DeepFinder: the voxels of each class are clustered with MeanShift (flat kernel,
bandwidth about the particle radius); each cluster centre is a pick, scored by its size.
It is the slow reference MP-NMS is compared with (``benchmarks/postprocess.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryoscout.picking.mpnms import PICK_COLUMNS


def meanshift_picks(
    prob_or_classes,
    radius: float | dict[int, float],
    min_size: int = 1,
    bin_seeding: bool = False,
    classes: list[int] | None = None,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Particle centres by MeanShift clustering of each class's voxels.

    Parameters
    ----------
    prob_or_classes
        ``(z, y, x)`` integer class map (0 = background) or ``(C, z, y, x)`` probabilities
        (channel 0 background; binarized by argmax).
    radius
        Bandwidth in voxels (one value or ``{class: radius}``).
    min_size
        Drop clusters with fewer voxels.
    bin_seeding
        scikit-learn's faster seeding on a grid (off: every voxel seeds, as in DeepFinder).
    classes
        Classes to cluster; default all present.
    n_jobs
        Passed to :class:`sklearn.cluster.MeanShift`.

    Returns
    -------
    pandas.DataFrame
        ``class, x, y, z, score`` with score = cluster size in voxels.
    """
    from sklearn.cluster import MeanShift

    arr = np.asarray(prob_or_classes)
    class_map = arr.argmax(0) if arr.ndim == 4 else arr.astype(np.int64)
    wanted = classes if classes is not None else [int(c) for c in np.unique(class_map) if c > 0]
    frames = []
    for c in wanted:
        bw = radius.get(c) if isinstance(radius, dict) else radius
        pts = np.argwhere(class_map == c).astype(np.float64)  # (n, 3) z, y, x
        if len(pts) == 0:
            continue
        ms = MeanShift(bandwidth=float(bw), bin_seeding=bin_seeding, n_jobs=n_jobs).fit(pts)
        sizes = np.bincount(ms.labels_, minlength=len(ms.cluster_centers_))
        ok = sizes >= min_size
        ctr = ms.cluster_centers_[ok]
        frames.append(
            pd.DataFrame(
                {"class": c, "x": ctr[:, 2], "y": ctr[:, 1], "z": ctr[:, 0], "score": sizes[ok]}
            )
        )
    if not frames:
        return pd.DataFrame({col: pd.Series(dtype=float) for col in PICK_COLUMNS}).astype(
            {"class": int}
        )
    out = pd.concat(frames, ignore_index=True)
    out["class"] = out["class"].astype(int)
    out["score"] = out["score"].astype(float)
    return out.sort_values(["class", "score"], ascending=[True, False], ignore_index=True)
