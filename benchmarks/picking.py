"""Picking benchmark: train on simulated tomograms, pick a held-out one, time inference.

Measures, in one run on this machine:

1. F1 per class on a held-out simulated tomogram after training on others
   (SHREC 2021 templates from ../shared/data/templates_10A, binned to 20 Å). The
   post-processing settings (MP-NMS threshold, MeanShift minimum cluster size) are
   chosen on a separate validation tomogram, as a user would, never on the test one.
2. MP-NMS against scikit-learn MeanShift on the same segmentation: time and F1 of each.
3. Inference time and peak memory (``resource.getrusage``) for a 512x512x200 tomogram
   with the trained (CPU-sized) network, in a separate process so the peak is its own;
   plus the full-size network (24, 48, 72, 108) timed on a few 72³ tiles and extrapolated.

Usage::

    python benchmarks/picking.py --out /tmp/pickbench            # ~25 min on 2 CPU cores
    python benchmarks/picking.py --out /tmp/pickbench --quick    # ~3 min smoke run

Writes ``summary.json`` into ``--out`` and the Markdown fragment
``benchmarks/results/picking.md`` (unless ``--no-results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO.parent / "shared" / "data" / "templates_10A"
CLASSES = ["4v94", "4cr2", "3d2f", "1bxn", "3qm1"]  # three large, two small


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def simulate(n: int, shape, voxel: float, particles: int, snr: float, seed0: int):
    from cryoscout.simulate.tomogram import TomogramConfig, load_templates, simulate_tomogram

    maps = load_templates(TEMPLATES, CLASSES) if TEMPLATES.is_dir() else {}
    cfg = TomogramConfig(
        shape=shape, voxel_size_A=voxel, n_particles=particles, templates=maps, snr=snr
    )
    return [simulate_tomogram(cfg, seed=seed0 + i) for i in range(n)], cfg


def infer_timing(
    model_path: str, shape, tile: int, margin: int, threads: int, max_tiles: int | None
) -> dict:
    """Segment a random (z, y, x) volume read memory-mapped from an MRC; time and peak RSS."""
    import tempfile

    import torch

    from cryoscout.io.mrc import read_mrc, write_mrc
    from cryoscout.picking.infer import iter_tiles, predict_tomogram
    from cryoscout.picking.weights import load_model

    torch.set_num_threads(threads)
    model, info = load_model(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        path = Path(tmp) / "big.mrc"
        write_mrc(path, rng.normal(size=shape).astype(np.float32), 20.0)
        del rng
        vol, _ = read_mrc(path, mmap=True)
        rss0 = _peak_rss_mb()
        t0 = time.perf_counter()
        pred = predict_tomogram(
            model,
            vol,
            tile=tile,
            margin=margin,
            normalization=info.normalization,
            progress=False,
            max_tiles=max_tiles,
        )
        seconds = time.perf_counter() - t0
        total = len(list(iter_tiles(shape, tile, margin, model.stride)))
        done = total if max_tiles is None else min(max_tiles, total)
        n_fg = int((pred.labels > 0).sum())
    return {
        "shape_zyx": list(shape),
        "tile": tile,
        "margin": margin,
        "seconds": round(seconds * total / done, 1),
        "tiles_run": done,
        "tiles_total": total,
        "peak_rss_mb": round(_peak_rss_mb(), 0),
        "peak_rss_before_mb": round(rss0, 0),
        "threads": threads,
        "foreground_voxels": n_fg,
    }


def full_size_tile_timing(shape, tile: int, margin: int, n_tiles: int, threads: int) -> dict:
    """Forward time of the paper-size network on a few tiles, extrapolated to ``shape``."""
    import torch

    from cryoscout.picking.infer import iter_tiles
    from cryoscout.picking.unet import ResUNet3d

    torch.set_num_threads(threads)
    net = ResUNet3d(len(CLASSES)).eval()
    x = torch.randn(1, 1, tile, tile, tile)
    times = []
    with torch.inference_mode():
        for _ in range(n_tiles):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    total = len(list(iter_tiles(shape, tile, margin, net.stride)))
    per = float(np.median(times))
    return {
        "channels": list(net.channels),
        "tile": tile,
        "margin": margin,
        "timed_tiles": n_tiles,
        "seconds_per_tile": round(per, 2),
        "tiles_for_volume": total,
        "extrapolated_seconds": round(per * total, 0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3, help="one-cycle peak learning rate")
    p.add_argument("--loss", default="dice", choices=["dice", "dice+ce"])
    p.add_argument(
        "--label-frac", type=float, default=0.6, help="TBall label radius / particle radius"
    )
    p.add_argument("--samples", type=int, default=48, help="patches per epoch")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--channels", default="8,16,24,32")
    p.add_argument("--train-tomograms", type=int, default=3)
    p.add_argument("--shape", default="64,160,160", help="z,y,x of the simulated tomograms")
    p.add_argument("--particles", type=int, default=70)
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--voxel", type=float, default=20.0)
    p.add_argument("--tile", type=int, default=96, help="inference tile")
    p.add_argument("--margin", type=int, default=16)
    p.add_argument(
        "--thresholds",
        default="0.05,0.1,0.2,0.3,0.4,0.5",
        help="MP-NMS pooled-mean thresholds tried on the validation tomogram",
    )
    p.add_argument("--big", default="200,512,512", help="z,y,x of the timing volume")
    p.add_argument("--big-tiles", type=int, default=None, help="time only this many tiles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-results", action="store_true")
    p.add_argument("--infer-only", help=argparse.SUPPRESS)  # subprocess mode: model path
    args = p.parse_args()
    threads = min(2, os.cpu_count() or 1)

    if args.infer_only:
        big = tuple(int(v) for v in args.big.split(","))
        res = infer_timing(args.infer_only, big, args.tile, args.margin, threads, args.big_tiles)
        print(json.dumps(res))
        return

    import torch

    from cryoscout.io.atomic import write_text
    from cryoscout.picking.data import NORMALIZATION, prepare_tomogram
    from cryoscout.picking.evaluate import evaluate_picks
    from cryoscout.picking.infer import predict_tomogram
    from cryoscout.picking.meanshift import meanshift_picks
    from cryoscout.picking.module import TrainConfig, train_model
    from cryoscout.picking.mpnms import mp_nms
    from cryoscout.picking.weights import PickingModelInfo, save_model

    torch.set_num_threads(threads)
    if args.quick:
        args.epochs, args.samples, args.train_tomograms = 2, 8, 1
        args.shape, args.particles, args.big = "48,96,96", 30, "64,128,128"
        args.big_tiles = 1
    shape = tuple(int(v) for v in args.shape.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"machine": f"{platform.node()}: {os.cpu_count()} CPU cores, no GPU"}

    t0 = time.perf_counter()
    sims, _ = simulate(
        args.train_tomograms + 2, shape, args.voxel, args.particles, args.snr, args.seed * 100
    )
    summary["simulate_seconds"] = round(time.perf_counter() - t0, 1)
    train_sims, val, test = sims[:-2], sims[-2], sims[-1]
    names = test.class_names
    radii = {c: float(r) for c, r in test.radii.items()}
    # Label radius: a fraction of the particle radius (at least 1 voxel). Half the radius
    # left the small classes one voxel wide and gave Dice too few voxels to learn from.
    label_r = {c: float(max(1, round(args.label_frac * r))) for c, r in radii.items()}
    tomos = [prepare_tomogram(s.tomogram, s.particles, label_r) for s in train_sims]

    cfg = TrainConfig(
        channels=tuple(int(c) for c in args.channels.split(",")),
        coord_mode="tomogram",  # lets inference use tiles larger than the training patch
        patch_size=args.patch,
        epochs=args.epochs,
        batch_size=4,
        samples_per_epoch=args.samples,
        lr=args.lr,
        seed=args.seed,
        accelerator="cpu",
        loss=args.loss,
    )
    t0 = time.perf_counter()
    model, history = train_model(tomos, len(names), cfg)
    train_s = time.perf_counter() - t0
    history.to_csv(args.out / "metrics.csv", index=False)
    model_path = args.out / "model.pt"
    save_model(
        model_path,
        model,
        PickingModelInfo(names, label_r, args.patch, dict(NORMALIZATION), args.voxel),
    )
    n_patches = args.epochs * args.samples
    summary["training"] = {
        "tomograms": len(train_sims),
        "particles": int(sum(len(s.particles) for s in train_sims)),
        "shape_zyx": list(shape),
        "voxel_A": args.voxel,
        "snr": args.snr,
        "channels": list(cfg.channels),
        "coord_mode": cfg.coord_mode,
        "patch": args.patch,
        "epochs": args.epochs,
        "patches": n_patches,
        "seconds": round(train_s, 0),
        "patches_per_s": round(n_patches / train_s, 2),
        "final_loss": round(float(history["train_loss"].iloc[-1]), 4),
        "label_radius": label_r,
        "lr": args.lr,
        "loss": args.loss,
    }

    def segment(sim):
        return predict_tomogram(
            model,
            sim.tomogram,
            tile=args.tile,
            margin=args.margin,
            normalization=NORMALIZATION,
            progress=False,
        ).labels

    val_labels = segment(val)
    t0 = time.perf_counter()
    test_labels = segment(test)
    summary["heldout_segment_seconds"] = round(time.perf_counter() - t0, 1)
    classes = list(range(1, len(names) + 1))

    def overall_f1(found, sim) -> float:
        return float(evaluate_picks(found, sim.particles, radii).overall["f1"])

    # Post-processing is sized by the *particle* radius (pooling kernel, merge distance,
    # MeanShift bandwidth): sized by the smaller label radius, one particle's blob split
    # into several picks. The threshold is chosen on the validation tomogram.
    thresholds = [float(v) for v in args.thresholds.split(",")]
    val_f1 = {
        thr: overall_f1(mp_nms(val_labels, radii, threshold=thr, classes=classes), val)
        for thr in thresholds
    }
    threshold = max(thresholds, key=lambda thr: (val_f1[thr], -thr))
    t0 = time.perf_counter()
    picks = mp_nms(test_labels, radii, threshold=threshold, classes=classes)
    t_mp = time.perf_counter() - t0
    # MeanShift as DeepFinder runs it: all classes together, bin seeding, majority vote.
    n_fg = int((test_labels > 0).sum())
    ms_val = meanshift_picks(val_labels, radii, classes=classes)
    sizes = [1, 5, 10, 20, 40, 80]
    ms_val_f1 = {m: overall_f1(ms_val[ms_val["score"] >= m], val) for m in sizes}
    min_size = max(sizes, key=lambda m: (ms_val_f1[m], -m))
    t0 = time.perf_counter()
    ms = meanshift_picks(test_labels, radii, min_size=min_size, classes=classes)
    t_ms = time.perf_counter() - t0

    def scores(found) -> dict:
        res = evaluate_picks(found, test.particles, radii)
        out = {"overall_f1": round(float(res.overall["f1"]), 3)}
        for c, row in res.per_class.iterrows():
            out[names[int(c) - 1]] = {
                k: (round(float(row[k]), 3) if k not in ("tp", "fp", "fn") else int(row[k]))
                for k in ("precision", "recall", "f1", "tp", "fp", "fn")
            }
        return out

    summary["heldout"] = {
        "particles": len(test.particles),
        "particle_radius_vox": {names[c - 1]: round(r, 2) for c, r in radii.items()},
        "mpnms": {"seconds": round(t_mp, 3), "threshold": threshold, **scores(picks)},
        "mpnms_val_f1": {str(k): round(v, 3) for k, v in val_f1.items()},
        "meanshift": {"seconds": round(t_ms, 2), "min_size": min_size, **scores(ms)},
        "meanshift_val_f1": {str(k): round(v, 3) for k, v in ms_val_f1.items()},
        "speed_ratio_meanshift_over_mpnms": round(t_ms / max(t_mp, 1e-9), 1),
        "foreground_voxels": n_fg,
    }
    print(json.dumps(summary["heldout"], indent=1), flush=True)

    # Inference on a big volume in its own process, so the memory peak is its own.
    cmd = [sys.executable, __file__, "--out", str(args.out), "--infer-only", str(model_path)]
    cmd += ["--big", args.big, "--tile", str(args.tile), "--margin", str(args.margin)]
    if args.big_tiles:
        cmd += ["--big-tiles", str(args.big_tiles)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary["big_inference"] = json.loads(done.stdout.strip().splitlines()[-1])
    big = tuple(int(v) for v in args.big.split(","))
    summary["full_size_net"] = full_size_tile_timing(big, 72, 12, 2 if args.quick else 3, threads)
    summary["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if not args.no_results:
        write_text(REPO / "benchmarks" / "results" / "picking.md", _markdown(summary))


def _markdown(s: dict) -> str:
    tr, ho, bi, fs = s["training"], s["heldout"], s["big_inference"], s["full_size_net"]
    lines = [
        "## Particle picking (DeepETPicker-style), CPU run",
        "",
        f"Machine: {s['machine']} (shared with other jobs while measured).",
        f"Command: `python benchmarks/{s['command']}`",
        "",
        "Settings (CPU-sized, not the paper's): "
        f"{tr['tomograms']} training tomograms + 1 held-out, simulated "
        f"{'x'.join(map(str, tr['shape_zyx'][::-1]))} voxels (x,y,z) at {tr['voxel_A']} Å "
        f"(templates binned 2x), SNR {tr['snr']}, CTF on; network channels {tr['channels']} "
        f"(paper: 24,48,72,108), coordinate channels across the tomogram, patch {tr['patch']}³, "
        f"{tr['epochs']} epochs x {tr['patches'] // tr['epochs']} patches "
        f"= {tr['patches']} patches in {tr['seconds']:.0f} s "
        f"({tr['patches_per_s']} patches/s), peak lr {tr['lr']}; loss {tr['loss']}, "
        f"final {tr['final_loss']}; label radius per class {tr['label_radius']} voxels.",
        "",
        f"Held-out tomogram: {ho['particles']} particles; hit radius = particle radius "
        f"{ho['particle_radius_vox']} voxels. Post-processing sized by the particle radius "
        f"and tuned on a separate validation tomogram: MP-NMS threshold "
        f"{ho['mpnms']['threshold']} (validation F1 by threshold {ho['mpnms_val_f1']}), "
        f"MeanShift minimum cluster size {ho['meanshift']['min_size']} voxels "
        f"(validation F1 {ho['meanshift_val_f1']}).",
        "",
        "| class | MP-NMS P | R | F1 | MeanShift P | R | F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ho["particle_radius_vox"]:
        a, b = ho["mpnms"].get(name), ho["meanshift"].get(name)
        if a is None:
            continue
        ms = f"{b['precision']} | {b['recall']} | {b['f1']}" if b else "n/a | n/a | n/a"
        lines.append(f"| {name} | {a['precision']} | {a['recall']} | {a['f1']} | {ms} |")
    lines += [
        f"| overall (all classes pooled) | | | {ho['mpnms']['overall_f1']} | | | "
        f"{ho['meanshift']['overall_f1']} |",
        "",
        f"Post-processing of the same segmentation: MP-NMS {ho['mpnms']['seconds']} s, "
        f"MeanShift {ho['meanshift']['seconds']} s: "
        f"**{ho['speed_ratio_meanshift_over_mpnms']}x** (target >= 100x); "
        f"{ho['foreground_voxels']} foreground voxels; MeanShift as DeepFinder runs it "
        "(all classes together, bin seeding, class by majority vote).",
        "",
        f"Inference, {'x'.join(map(str, bi['shape_zyx'][::-1]))} (x,y,z) tomogram read "
        f"memory-mapped, trained CPU-sized net, tiles {bi['tile']}³ with margin {bi['margin']}, "
        f"{bi['threads']} threads: **{bi['seconds']} s** ({bi['tiles_run']} of "
        f"{bi['tiles_total']} tiles run, the rest extrapolated at the same rate), "
        f"peak RSS **{bi['peak_rss_mb']:.0f} MB** "
        f"(process peak; {bi['peak_rss_before_mb']:.0f} MB before segmenting).",
        "",
        f"Full-size network ({fs['channels']}), tiles {fs['tile']}³ margin {fs['margin']}: "
        f"{fs['seconds_per_tile']} s per tile (median of {fs['timed_tiles']}), "
        f"{fs['tiles_for_volume']} tiles -> about {fs['extrapolated_seconds']:.0f} s "
        "for the same volume (extrapolated, not run end to end).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
