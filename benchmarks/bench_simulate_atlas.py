"""Measure the atlas simulator: time per atlas and the mix of truth scores it produces.

Run from the repository root (2 CPU cores here; numbers are per atlas, one process):

    $ CRYOSCOUT_NO_PROGRESS=1 python benchmarks/bench_simulate_atlas.py --atlases 5

Prints a Markdown fragment (also written with ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlases", type=int, default=5, help="Default atlases to time.")
    parser.add_argument("--out", type=Path, default=None, help="Write the fragment here too.")
    args = parser.parse_args()

    import pandas as pd

    from cryoscout.simulate.atlas import SCORES, AtlasConfig, simulate_atlas

    base = AtlasConfig()
    variants = {
        "default: 300 mesh, 5x5 x 1024 px, 500 nm/px": base,
        "200 mesh, 700 nm/px": dataclasses.replace(base, mesh=200, pixel_size_nm=700.0),
        "400 mesh, 300 nm/px": dataclasses.replace(base, mesh=400, pixel_size_nm=300.0),
        "300 mesh, 100 nm/px (holes resolved)": dataclasses.replace(base, pixel_size_nm=100.0),
        "3x3 x 2048 px, 400 nm/px": dataclasses.replace(
            base, tiles_x=3, tiles_y=3, tile_size=2048, pixel_size_nm=400.0
        ),
    }
    rows = []
    truths = []
    for name, cfg in variants.items():
        n = args.atlases if cfg is base else 1
        walls, cpus = [], []
        for seed in range(n):
            w0, c0 = time.perf_counter(), time.process_time()
            sim = simulate_atlas(cfg, seed=seed)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            if cfg is base:
                truths.append(sim.truth)
        rows.append(
            f"| {name} | {sim.image.shape[1]}x{sim.image.shape[0]} | {n} | "
            f"{np.median(walls):.2f} | {np.median(cpus):.2f} | {len(sim.truth)} |"
        )
    truth = pd.concat(truths)
    full = truth[truth["full"] == 1]
    hist = [
        f"| {s} | " + " | ".join(str(v) for v in np.bincount(full[s], minlength=5)) + " |"
        for s in SCORES
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join(
        [
            "## Atlas simulator (`cryoscout simulate atlas`)",
            "",
            f"Machine: {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}; "
            f"load average at the end {load:.1f} (other jobs shared the cores).",
            "Command: `CRYOSCOUT_NO_PROGRESS=1 python benchmarks/bench_simulate_atlas.py "
            f"--atlases {args.atlases}`",
            "",
            "Target: a 5x5 atlas of 1024 px tiles in a few seconds on one core. CPU s is the",
            "time this single-threaded process spent on a core; wall s is inflated when other",
            "jobs share the 2 cores (load average above).",
            "",
            "| atlas | montage (px) | runs | wall s (median) | CPU s (median) | squares |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"Truth score mix over the {len(truths)} default atlases "
            f"({len(full)} full squares; counts of scores 0/1/2/3/4):",
            "",
            "| score | 0 | 1 | 2 | 3 | 4 |",
            "| --- | --- | --- | --- | --- | --- |",
            *hist,
            "",
        ]
    )
    print(text)
    if args.out is not None:
        from cryoscout.io.atomic import write_text

        write_text(args.out, text)


if __name__ == "__main__":
    main()
