"""MP-NMS against MeanShift clustering on the same prediction volume, side by side.

The prediction-like volume: a simulated tomogram's TBall-M labels (a ball of radius
sqrt(2) * r around each true centre, r = half the particle radius) turned into a noisy
softmax-like prediction (Gaussian blur + noise + argmax), so both post-processors see the
blobs, ragged edges and speckles a network produces. Both are timed on the same class
map; F1 uses one-to-one matching within the particle radius.

    python benchmarks/postprocess.py --out benchmarks/results/postprocess.md
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from scipy import ndimage

from cryoscout.picking.evaluate import evaluate_picks
from cryoscout.picking.meanshift import meanshift_picks
from cryoscout.picking.mpnms import mp_nms
from cryoscout.simulate.tomo_phantom import build_phantom, procedural_template


def prediction_volume(shape, n_particles, seed, voxel_size_A=10.0):
    """Truth table, per-class radius and a noisy class map (z, y, x)."""
    rng = np.random.default_rng(seed)
    templates = [procedural_template(s, voxel_size_A) for s in ("sphere", "ellipsoid", "ring")]
    ph = build_phantom(shape, templates, n_particles, rng, slab_thickness_vox=0.8 * shape[0])
    radii = {i + 1: t.radius for i, t in enumerate(templates)}
    n_cls = len(templates) + 1
    onehot = np.zeros((n_cls, *shape), np.float32)
    onehot[0] = 1
    zz, yy, xx = np.indices(shape, sparse=True)
    for _, p in ph.particles.iterrows():
        r_label = np.sqrt(2) * radii[p["class"]] / 2
        ball = (xx - p.x) ** 2 + (yy - p.y) ** 2 + (zz - p.z) ** 2 <= r_label**2
        onehot[p["class"]][ball] = 1
        onehot[0][ball] = 0
    prob = np.stack([ndimage.gaussian_filter(c, 1.5) for c in onehot])
    prob += rng.normal(0, 0.2, prob.shape).astype(np.float32)
    return ph.particles, radii, prob.argmax(0)


def timed(fn, *args, repeat=1, **kwargs):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,128,64", help="x,y,z of the comparison volume")
    ap.add_argument("--particles", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-shape", default="512,512,200", help="x,y,z for MP-NMS speed alone")
    ap.add_argument("--out", default=None, help="Markdown file for the results")
    a = ap.parse_args()
    x, y, z = (int(v) for v in a.shape.split(","))
    truth, radii, classes = prediction_volume((z, y, x), a.particles, a.seed)
    n_vox = int((classes > 0).sum())

    rows = []
    t_mp, mp = timed(mp_nms, classes, radius=radii, threshold=0.1, repeat=3)
    rows.append(("MP-NMS (torch CPU)", t_mp, mp))
    # Clusters smaller than a third of a label ball are speckle (DeepFinder filters by size).
    min_size = int(min(np.pi * 4 / 3 * (np.sqrt(2) * r / 2) ** 3 for r in radii.values()) / 3)
    t_bs, bs = timed(meanshift_picks, classes, radius=radii, bin_seeding=True, min_size=min_size)
    rows.append(("MeanShift, bin seeding", t_bs, bs))
    t_ms, ms = timed(meanshift_picks, classes, radius=radii, min_size=min_size)
    rows.append(("MeanShift, every voxel seeds (DeepFinder)", t_ms, ms))

    fx, fy, fz = (int(v) for v in a.full_shape.split(","))
    big_truth, big_radii, big = prediction_volume((fz, fy, fx), 300, a.seed + 1)
    t_big, big_picks = timed(mp_nms, big, radius=big_radii, threshold=0.1)
    big_f1 = evaluate_picks(big_picks, big_truth, big_radii).overall["f1"]

    lines = [
        "## Post-processing: MP-NMS vs MeanShift",
        "",
        f"Command: `python benchmarks/postprocess.py --shape {a.shape} --particles "
        f"{a.particles} --seed {a.seed} --full-shape {a.full_shape}`",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads (2 CPU cores shared), no GPU; "
        f"torch {torch.__version__}.",
        "",
        f"Prediction volume {x}x{y}x{z} voxels, {len(truth)} particles in 3 classes, "
        f"{n_vox} foreground voxels (TBall-M labels blurred + noise, argmax); "
        f"MeanShift drops clusters under {min_size} voxels.",
        "",
        "| method | time (s) | speed-up vs MeanShift | picks | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t, picks in rows:
        ev = evaluate_picks(picks, truth, radii).overall
        lines.append(
            f"| {name} | {t:.3f} | {t_ms / t:.0f}x | {len(picks)} | {ev['precision']:.3f} "
            f"| {ev['recall']:.3f} | {ev['f1']:.3f} |"
        )
    lines += [
        "",
        f"MP-NMS alone on a {fx}x{fy}x{fz} class map ({len(big_truth)} particles): "
        f"{t_big:.2f} s, F1 {big_f1:.3f}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        from cryoscout.io.atomic import write_text

        write_text(a.out, text)


if __name__ == "__main__":
    main()
