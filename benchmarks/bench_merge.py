"""MP-NMS on many candidate picks: a weak network's segmentation, and merge_close's scaling.

A weakly trained network labels whole regions as particles. Every voxel of such a
plateau is a local maximum of the pooled map, so MP-NMS gets 10^5-10^6 candidates
and ``merge_close`` (greedy merge within the particle radius) must stay linear in
them. This measures, on a 160x160x64 volume (the README's tomogram size):

1. whole-volume plateaus (half the volume class 1, half class 2) and voxel speckle:
   candidates, ``pooled_maxima`` and ``merge_close`` time, and ``mp_nms`` end to end;
2. ``merge_close`` on thousands to 500,000 uniformly scattered candidates, against a
   quadratic greedy merge (each candidate compared with every kept pick, vectorised
   in numpy) on the sizes where that finishes, checking both keep the same picks.

    python benchmarks/bench_merge.py --out benchmarks/results/merge.md
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from cryoscout.picking.mpnms import merge_close, mp_nms, pooled_maxima

SHAPE = (64, 160, 160)  # z, y, x
RADIUS = {1: 9.0, 2: 7.0}  # the README's --val-radius 1:9,2:7


def quadratic_merge(points: np.ndarray, scores: np.ndarray, min_distance: float) -> np.ndarray:
    """The same greedy merge, comparing each candidate with every kept pick (O(n * kept))."""
    order = np.lexsort((*points.T[::-1], -scores))
    kept: list[int] = []
    kept_pts = np.empty((0, points.shape[1]))
    reach2 = (min_distance - 1e-9) ** 2
    for i in order:
        if len(kept) and (((kept_pts - points[i]) ** 2).sum(1) <= reach2).any():
            continue
        kept.append(int(i))
        kept_pts = np.vstack([kept_pts, points[i]])
    return np.asarray(kept, dtype=np.int64)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def weak_segmentations(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    plateau = np.zeros(SHAPE, np.int64)
    plateau[:, :, : SHAPE[2] // 2] = 1
    plateau[:, :, SHAPE[2] // 2 :] = 2
    speckle = rng.integers(0, 3, SHAPE)  # argmax of a network that has learnt nothing
    return {"two half-volume plateaus": plateau, "voxel speckle (3 classes)": speckle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="5000,20000,50000,500000", help="uniform candidate counts")
    ap.add_argument("--quadratic-max", type=int, default=50000, help="largest n for O(n^2)")
    ap.add_argument("--out", default=None, help="Markdown file for the results")
    a = ap.parse_args()
    torch.set_num_threads(2)
    lines = [
        "## MP-NMS with many candidates (weak networks)",
        "",
        "Command: `python benchmarks/bench_merge.py --out benchmarks/results/merge.md`  ",
        f"Machine: {platform.machine()}, 2 CPU cores shared with other jobs, no GPU; "
        f"torch {torch.__version__}.",
        "",
        f"Segmentations of {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} voxels, particle radius "
        "9 and 7 voxels (kernel 7 and 5, two pooling passes, threshold 0.1):",
        "",
        "| segmentation | class | candidates | pooled_maxima (s) | merge_close (s) | picks |",
        "|---|---|---|---|---|---|",
    ]
    totals = []
    for name, seg in weak_segmentations(a.seed).items():
        for c, r in RADIUS.items():
            k = 2 * round(r / 3) + 1
            t_pool, (idx, score) = timed(pooled_maxima, torch.as_tensor(seg == c), k, 2, 0.1)
            pts = idx.numpy().astype(np.float64)
            t_merge, kept = timed(merge_close, pts, score.numpy(), r)
            lines.append(
                f"| {name} | {c} | {len(pts)} | {t_pool:.2f} | {t_merge:.2f} | {len(kept)} |"
            )
        t_all, picks = timed(mp_nms, seg, RADIUS, progress=False)
        totals.append(f"- `mp_nms` end to end on the {name}: {t_all:.1f} s, {len(picks)} picks.")
    lines += ["", *totals, ""]

    rng = np.random.default_rng(a.seed)
    lines += [
        "`merge_close` (KD-tree, linear) against a quadratic greedy merge on candidates "
        "scattered uniformly in the same volume, merge distance 9 voxels:",
        "",
        "| candidates | kept | merge_close (s) | quadratic (s) | same picks |",
        "|---|---|---|---|---|",
    ]
    for n in (int(v) for v in a.sizes.split(",")):
        pts = rng.uniform(0, 1, (n, 3)) * np.array(SHAPE, float)
        scores = rng.random(n)
        t_kd, kept = timed(merge_close, pts, scores, 9.0)
        if n <= a.quadratic_max:
            t_q, ref = timed(quadratic_merge, pts, scores, 9.0)
            q, same = f"{t_q:.2f}", "yes" if np.array_equal(kept, ref) else "**no**"
        else:
            q, same = "not run", "-"
        lines.append(f"| {n} | {len(kept)} | {t_kd:.2f} | {q} | {same} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
