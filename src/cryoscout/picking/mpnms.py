"""MP-NMS: particle centres from a segmentation by mean pooling and max-pooling NMS.

After DeepETPicker: binarize the prediction per class, mean-pool it a few times (kernel
below the particle size, stride 1, same padding) so each blob peaks at its centre, max-pool
the result and keep the voxels where the max equals the mean-pooled value and exceeds a
threshold; finally merge picks closer than a minimum distance, keeping the higher score.

The pooling runs in torch on the input's device (CPU or GPU). Box sums are computed
separably (three 1D poolings) and as *sums* (float32 when that is exact, else float64), so
values are exact integers and the max-equals-mean test has no rounding ties to lose; the
score is the pooled mean in [0, 1] (the fraction of the neighbourhood the segmentation
fills, after smoothing).

Optionally (``max_surround``), a pick is kept only when its class's segmentation leaves
most of a shell just outside the particle free (:func:`shell_fill`): a particle is a
compact blob of known size, and MP-NMS alone puts a row of full-score picks into any
region of the class far larger than a particle (what a picker does with a tomogram
unlike its training data, e.g. whose noise rises with frequency).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PICK_COLUMNS = ["class", "x", "y", "z", "score"]


def _shift_reduce(v, k: int, dim: int, op):
    """Reduce ``v`` over a centred window of ``k`` along ``dim`` (same size).

    Window elements beyond the border are left out, which is zero padding for a sum of
    non-negative values and no padding for a max. ``k - 1`` in-place ops on shifted views
    of one copy: exact, and on CPU several times faster than ``avg_pool3d``/``max_pool3d``.
    """
    out = v.clone()
    n = v.shape[dim]
    for shift in range(1, k // 2 + 1):
        if shift >= n:
            break
        head, tail = out.narrow(dim, shift, n - shift), out.narrow(dim, 0, n - shift)
        op(head, v.narrow(dim, 0, n - shift), out=head)  # the neighbour before
        op(tail, v.narrow(dim, shift, n - shift), out=tail)  # the neighbour after
    return out


def _box_sum(v, k: int):
    """Sum over a ``k^3`` cube with zero padding (same size), separably."""
    import torch

    for dim in (2, 3, 4):
        v = _shift_reduce(v, k, dim, torch.add)
    return v


def _box_max(v, k: int):
    """Max over a ``k^3`` cube (padding never wins), separably."""
    import torch

    for dim in (2, 3, 4):
        v = _shift_reduce(v, k, dim, torch.maximum)
    return v


def pooled_maxima(mask, kernel: int, n_pool: int, threshold: float):
    """Candidate centres of one binary mask: ``(z, y, x)`` indices and scores.

    Parameters
    ----------
    mask
        ``(z, y, x)`` torch bool/float tensor (1 inside the segmentation).
    kernel
        Odd pooling kernel size (voxels).
    n_pool
        Number of mean-pooling passes.
    threshold
        Keep maxima whose pooled mean exceeds this (0-1).

    Returns
    -------
    idx : torch.Tensor
        ``(n, 3)`` int64 ``(z, y, x)``.
    score : torch.Tensor
        ``(n,)`` pooled means.
    """
    import torch

    # Box sums of a binary mask are integers; float32 holds them exactly below 2**24,
    # which covers the usual kernels and halves the memory traffic of float64.
    exact32 = float(kernel) ** (3 * n_pool) < 2**24
    v = mask.to(torch.float32 if exact32 else torch.float64)[None, None]
    for _ in range(n_pool):
        v = _box_sum(v, kernel)
    hmax = _box_max(v, kernel)
    norm = float(kernel) ** (3 * n_pool)
    keep = (hmax == v) & (v > threshold * norm)
    idx = torch.nonzero(keep[0, 0])
    return idx, v[0, 0][keep[0, 0]].to(torch.float64) / norm


def merge_close(points: np.ndarray, scores: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy merge: keep the highest-scoring point, drop others within ``min_distance``.

    Parameters
    ----------
    points
        ``(n, d)`` coordinates.
    scores
        ``(n,)`` scores.
    min_distance
        Points closer than this (strictly) to a kept, better point are dropped.

    Returns
    -------
    numpy.ndarray
        Indices of the kept points, best first.
    """
    from scipy.spatial import cKDTree

    if len(points) == 0 or min_distance <= 0:
        return np.argsort(-scores, kind="stable")
    # Ties broken by position so results do not depend on input order.
    order = np.lexsort((*points.T[::-1], -scores))
    tree = cKDTree(points)
    removed = np.zeros(len(points), bool)
    kept = []
    for i in order:
        if removed[i]:
            continue
        kept.append(i)
        for j in tree.query_ball_point(points[i], r=min_distance - 1e-9):
            removed[j] = True
    return np.asarray(kept, dtype=np.int64)


# The shell tested by ``max_surround``, in particle radii: outside the particle's own blob
# (the TBall-M label reaches ~0.85 radii), inside the blobs of all but touching neighbours
# (a touching neighbour of the same size covers ~8% of it).
SHELL = (1.2, 1.8)


def shell_fill(mask: np.ndarray, points: np.ndarray, r_in: float, r_out: float) -> np.ndarray:
    """Fraction of the shell ``r_in <= d <= r_out`` around each point that ``mask`` covers.

    Only the part of the shell inside the volume counts, so a region of the mask that
    reaches the volume's edge is as full near the edge as in the middle.

    Parameters
    ----------
    mask
        ``(z, y, x)`` boolean volume.
    points
        ``(n, 3)`` ``(z, y, x)`` voxel indices.
    r_in, r_out
        Shell radii in voxels.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` fractions in [0, 1].
    """
    R = int(np.ceil(r_out))
    g = np.mgrid[-R : R + 1, -R : R + 1, -R : R + 1]
    d = np.sqrt((g**2).sum(0))
    shell = (d >= r_in) & (d <= r_out)
    offsets = g[:, shell].T  # (m, 3) offsets of the shell voxels
    pts = np.rint(np.asarray(points, dtype=float)).astype(np.int64).reshape(-1, 3)
    out = np.zeros(len(pts))
    shape = np.asarray(mask.shape)
    for i, p in enumerate(pts):
        q = p + offsets
        inside = np.all((q >= 0) & (q < shape), axis=1)
        q = q[inside]
        out[i] = mask[q[:, 0], q[:, 1], q[:, 2]].mean() if len(q) else 0.0
    return out


def mp_nms(
    prob_or_classes,
    radius: float | dict[int, float],
    threshold: float | dict[int, float] = 0.1,
    n_pool: int = 2,
    kernel: int | dict[int, int] | None = None,
    min_distance: float | dict[int, float] | None = None,
    prob_threshold: float | None = None,
    classes: list[int] | None = None,
    device=None,
    progress: bool = True,
    max_surround: float | None = None,
) -> pd.DataFrame:
    """Particle centres from a segmentation by MP-NMS.

    Parameters
    ----------
    prob_or_classes
        Either a ``(z, y, x)`` integer class map (0 = background) or a ``(C, z, y, x)``
        float probability volume whose channel 0 is the background and channel ``c`` is
        class ``c`` (softmax output). numpy array or torch tensor.
    radius
        Particle radius in voxels (one value, or ``{class: radius}``).
    threshold
        Minimum pooled mean (0-1) for a maximum to count as a pick (one value, or
        ``{class: threshold}``: classes differ in how fully the network fills them).
    n_pool
        Mean-pooling passes.
    kernel
        Pooling kernel (odd); default ``2 * round(radius / 3) + 1`` per class: smaller
        than the gap between touching particles, since a kernel of the particle diameter
        merges the blobs of neighbours into one peak between them.
    min_distance
        Merge picks closer than this (voxels); default ``radius``; 0 disables merging.
    prob_threshold
        For probability input: binarize ``prob[c] > prob_threshold`` instead of
        ``argmax == c``.
    classes
        Classes to pick; default every non-background class present.
    device
        torch device; default the input tensor's device (CPU for numpy input).
    progress
        Draw a progress bar over the classes (on a terminal; see :mod:`cryoscout.progress`).
    max_surround
        Drop picks whose class covers more than this fraction of the shell at
        1.2-1.8 particle radii around them (:data:`SHELL`, :func:`shell_fill`): picks
        inside a region of their class much larger than a particle. ``None``: keep all
        (DeepETPicker's MP-NMS).

    Returns
    -------
    pandas.DataFrame
        ``class, x, y, z, score`` (voxels; score = pooled mean), sorted by class then score.
    """
    import torch

    t = torch.as_tensor(prob_or_classes)
    if device is not None:
        t = t.to(device)
    if t.ndim == 4 and t.is_floating_point():
        n_channels = t.shape[0]
        class_map = None if prob_threshold is not None else torch.argmax(t, dim=0)
        wanted = classes if classes is not None else list(range(1, n_channels))
    elif t.ndim == 3:
        class_map = t.to(torch.int64)
        counts = torch.bincount(class_map.flatten().clamp(min=0))  # faster than unique
        wanted = classes if classes is not None else [int(c) for c in torch.nonzero(counts[1:]) + 1]
    else:
        raise ValueError("expected a (z, y, x) class map or a (C, z, y, x) probability volume")

    def per_class(value, c, default):
        return value.get(c, default) if isinstance(value, dict) else value

    from cryoscout.progress import track

    frames = []
    for c in track(wanted, "MP-NMS", unit="class") if progress else wanted:
        r = float(per_class(radius, c, None) or 0)
        if r <= 0:
            raise ValueError(f"no positive radius for class {c}")
        th = per_class(threshold, c, None)
        if th is None:
            raise ValueError(f"no threshold for class {c}")
        k = per_class(kernel, c, None) or 2 * round(r / 3) + 1
        k = int(k) | 1  # odd, so "same" padding keeps the grid
        md = per_class(min_distance, c, None)
        md = r if md is None else float(md)
        if class_map is not None:
            mask = class_map == c
        else:
            mask = t[c] > prob_threshold
        if not bool(mask.any()):
            continue
        # Pool only the bounding box of the class plus the pooling support: outside it the
        # box sums are zero in the full volume too, so the result is the same, much faster.
        nz = torch.nonzero(mask)
        margin = (n_pool + 1) * (k // 2)
        lo = (nz.min(dim=0).values - margin).clamp(min=0)
        hi = torch.minimum(
            nz.max(dim=0).values + margin + 1, torch.tensor(mask.shape, device=nz.device)
        )
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        idx, score = pooled_maxima(mask[box], k, n_pool, float(th))
        idx = idx + lo.to(idx.device)
        pts = idx.cpu().numpy().astype(np.float64)
        sc = score.cpu().numpy()
        keep = merge_close(pts, sc, md)
        pts, sc = pts[keep], sc[keep]
        if max_surround is not None and len(pts):
            fill = shell_fill(mask.cpu().numpy(), pts, SHELL[0] * r, SHELL[1] * r)
            pts, sc = pts[fill <= max_surround], sc[fill <= max_surround]
        frames.append(
            pd.DataFrame({"class": c, "x": pts[:, 2], "y": pts[:, 1], "z": pts[:, 0], "score": sc})
        )
    if not frames:
        return pd.DataFrame({col: pd.Series(dtype=float) for col in PICK_COLUMNS}).astype(
            {"class": int}
        )
    out = pd.concat(frames, ignore_index=True)
    out["class"] = out["class"].astype(int)
    return out.sort_values(["class", "score"], ascending=[True, False], ignore_index=True)
