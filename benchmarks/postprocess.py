"""MP-NMS against MeanShift clustering on the same segmentations, side by side.

MeanShift runs as DeepFinder's published clustering does (``Cluster.launch``: all object
voxels of every class together, ``bin_seeding=True``, one bandwidth = the average particle
radius, class by majority vote). The per-class variant seeded from every voxel, which the
first comparison used, is timed on the small volume only, for reference.

Three segmentations, each post-processed by both methods (time and F1 of each):

1. A synthetic prediction-like class map (``--shape``): a simulated tomogram's TBall-M
   labels (a ball of radius sqrt(2) * r / 2 around each true centre) blurred, noised and
   argmaxed, so both see the blobs, ragged edges and speckles a network produces.
2. The same at full size (``--full-shape``, 512x512x200, 300 particles).
3. With ``--model``: the trained network's segmentation of a simulated 160x160x64 tomogram
   at the model's voxel size (SHREC templates, as ``benchmarks/picking.py``); the MP-NMS
   threshold and MeanShift's minimum cluster size are chosen on a second (validation)
   tomogram, never on the test one.

F1 is one-to-one matching within the particle radius. The load average is printed with
each timing: the cores are shared, so compare methods within one run.

    python benchmarks/postprocess.py --model RUN/model.pt --out benchmarks/results/postprocess.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

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
    classes = np.zeros(shape, np.int64)
    best = np.full(shape, -np.inf, np.float32)
    # One class at a time keeps memory at a few volumes (a one-hot stack of a 512x512x200
    # volume is 0.8 GB per class).
    for c in (0, *radii):
        onehot = np.zeros(shape, np.float32)
        if c == 0:
            onehot[:] = 1
        for _, p in ph.particles.iterrows():
            r_label = np.sqrt(2) * radii[p["class"]] / 2
            lo = [max(0, int(v - r_label - 1)) for v in (p.z, p.y, p.x)]
            hi = [min(n, int(v + r_label + 2)) for v, n in zip((p.z, p.y, p.x), shape, strict=True)]
            zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            ball = (xx - p.x) ** 2 + (yy - p.y) ** 2 + (zz - p.z) ** 2 <= r_label**2
            box = onehot[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            box[ball] = 1.0 if p["class"] == c else 0.0 if c == 0 else box[ball]
        score = ndimage.gaussian_filter(onehot, 1.5)
        score += rng.normal(0, 0.2, shape).astype(np.float32)
        better = score > best
        classes[better] = c
        best[better] = score[better]
    return ph.particles, radii, classes


def timed(fn, *args, repeat=1, **kwargs):
    """Best wall time of ``repeat`` calls, the result, and the 1-min load average after."""
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best, out, os.getloadavg()[0]


def min_cluster_size(radii) -> int:
    """A third of the smallest label ball: smaller clusters are speckle (DeepFinder's size
    threshold)."""
    return int(min(np.pi * 4 / 3 * (np.sqrt(2) * r / 2) ** 3 for r in radii.values()) / 3)


def compare(classes, truth, radii, threshold, min_size, per_class=False, repeat=2):
    """Rows (method, seconds, load, picks, P, R, F1) for one class map."""
    wanted = sorted(radii)
    runs = [("MP-NMS (torch CPU)", mp_nms, {"threshold": threshold, "classes": wanted})]
    runs.append(("MeanShift, DeepFinder", meanshift_picks, {"min_size": min_size}))
    if per_class:
        kw = {"min_size": min_size, "method": "per-class"}
        runs.append(("MeanShift, per class, every voxel seeds", meanshift_picks, kw))
    rows = []
    for name, fn, kw in runs:
        n_rep = 1 if "every voxel" in name else repeat
        t, picks, load = timed(fn, classes, radii, repeat=n_rep, **kw)
        ev = evaluate_picks(picks, truth, radii).overall
        rows.append((name, t, load, len(picks), ev["precision"], ev["recall"], ev["f1"]))
        print(f"  {name}: {t:.3f} s (load {load:.1f}), F1 {ev['f1']:.3f}", flush=True)
    return rows


def network_case(model_path: str, seed: int, tile: int, margin: int):
    """Validation and test segmentations of simulated tomograms by a trained picker."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cryoscout.picking.infer import predict_tomogram
    from cryoscout.picking.weights import load_model
    from picking import CLASSES, simulate

    model, info = load_model(model_path)
    if list(info.class_names) != CLASSES:
        raise SystemExit(f"{model_path}: expected a model of classes {CLASSES}")
    sims, _ = simulate(2, (64, 160, 160), info.voxel_size_A or 20.0, 70, 0.1, seed)
    segs = [
        predict_tomogram(
            model, s.tomogram, tile, margin, normalization=info.normalization, progress=False
        ).labels
        for s in sims
    ]
    radii = {c: float(r) for c, r in sims[1].radii.items()}
    return sims, segs, radii


def table(title: str, rows, ref_name="MeanShift, DeepFinder") -> list[str]:
    t_ref = next(r[1] for r in rows if r[0] == ref_name)
    lines = [
        title,
        "",
        "| method | time (s) | load | MeanShift (DeepFinder) time / this | picks | P | R | F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t, load, n, p, r, f1 in rows:
        lines.append(
            f"| {name} | {t:.3f} | {load:.1f} | {t_ref / t:.2f}x | {n} | {p:.3f} | {r:.3f} "
            f"| {f1:.3f} |"
        )
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,128,64", help="x,y,z of the small synthetic volume")
    ap.add_argument("--particles", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--full-shape", default="512,512,200", help="x,y,z of the full-size volume")
    ap.add_argument("--full-particles", type=int, default=300)
    ap.add_argument("--model", help="trained picker (model.pt) for the network-output case")
    ap.add_argument("--tile", type=int, default=96)
    ap.add_argument("--margin", type=int, default=16)
    ap.add_argument("--no-per-class", action="store_true", help="skip the slow variant")
    ap.add_argument(
        "--cases", default="network,small,full", help="which of network, small, full to run"
    )
    ap.add_argument("--out", default=None, help="Markdown file for the results")
    a = ap.parse_args()
    threads = torch.get_num_threads()
    cmd = " ".join(["python", "benchmarks/postprocess.py", *sys.argv[1:]])
    lines = [
        "## Post-processing: MP-NMS vs MeanShift as DeepFinder runs it",
        "",
        f"Command: `{cmd}`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"shared with other jobs, {threads} torch threads, no GPU; torch {torch.__version__}. "
        "`load` is the 1-minute load average right after each timing; times are the best "
        "of 2 runs (1 for the per-class variant).",
        "",
    ]

    cases = set(a.cases.split(","))
    mp_nms(np.zeros((8, 8, 8), np.int64), 2.0)  # torch's first call pays for its start-up
    if a.model and "network" in cases:
        print("network output", flush=True)
        sims, segs, radii = network_case(a.model, 1000 + a.seed, a.tile, a.margin)
        (val, test), (val_seg, test_seg) = sims, segs
        classes = sorted(radii)

        def f1(picks, sim):
            return float(evaluate_picks(picks, sim.particles, radii).overall["f1"])

        thr = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
        thr_f1 = {v: f1(mp_nms(val_seg, radii, threshold=v, classes=classes), val) for v in thr}
        threshold = max(thr, key=lambda v: (thr_f1[v], -v))
        ms_val = meanshift_picks(val_seg, radii)
        sizes = [1, 5, 10, 20, 40, 80]
        size_f1 = {m: f1(ms_val[ms_val["score"] >= m], val) for m in sizes}
        min_size = max(sizes, key=lambda m: (size_f1[m], -m))
        rows = compare(test_seg, test.particles, radii, threshold, min_size)
        lines += table(
            f"### The trained network's segmentation (model `{a.model}`)\n\n"
            f"Held-out simulated 160x160x64 tomogram at 20 Å, {len(test.particles)} particles "
            f"of 5 SHREC classes; {int((test_seg > 0).sum())} foreground voxels. Chosen on "
            f"a validation tomogram: MP-NMS threshold {threshold}, MeanShift minimum cluster "
            f"size {min_size} voxels, bandwidth {np.mean(list(radii.values())):.2f} voxels "
            "(mean particle radius).",
            rows,
        )

    for label, shape_s, n_part, seed, per_class in (
        ("small", a.shape, a.particles, a.seed, not a.no_per_class),
        ("full", a.full_shape, a.full_particles, a.seed + 1, False),
    ):
        if label not in cases:
            continue
        x, y, z = (int(v) for v in shape_s.split(","))
        print(f"synthetic {x}x{y}x{z}", flush=True)
        truth, radii, classes = prediction_volume((z, y, x), n_part, seed)
        min_size = min_cluster_size(radii)
        rows = compare(classes, truth, radii, 0.1, min_size, per_class=per_class)
        lines += table(
            f"### Synthetic prediction volume {x}x{y}x{z}\n\n"
            f"{len(truth)} particles in 3 classes, {int((classes > 0).sum())} foreground "
            f"voxels (TBall-M labels blurred + noise, argmax); MP-NMS threshold 0.1; "
            f"MeanShift drops clusters under {min_size} voxels, bandwidth "
            f"{np.mean(list(radii.values())):.2f} voxels (DeepFinder) or the class radius "
            "(per class).",
            rows,
        )
    text = "\n".join(lines)
    print(text)
    if a.out:
        from cryoscout.io.atomic import write_text

        write_text(a.out, text)


if __name__ == "__main__":
    main()
