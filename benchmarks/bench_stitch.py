"""Measure atlas reading and stitching speed (not a test: run by hand, figures to results/).

    $ python benchmarks/bench_stitch.py            # 5x5 tiles of 1024x1024, EPU and SerialEM
    $ python benchmarks/bench_stitch.py --tiles 8 --size 2048

Tiles are written once to a temporary folder; the stitch is timed with the files in the
page cache (median of --repeats runs), split into tile loading and blending.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")

from cryoscout.atlas.stitch import stitch
from cryoscout.io.atlas_reader import load_tile, open_atlas
from cryoscout.io.epu import write_epu_atlas
from cryoscout.io.serialem import write_serialem_montage


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=5, help="tiles per side")
    parser.add_argument("--size", type=int, default=1024, help="tile side in pixels")
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    n, size = args.tiles, args.size
    step = round(size * (1 - args.overlap))
    pos = [(i * step, j * step) for j in range(n) for i in range(n)]
    tiles = [rng.random((size, size), dtype=np.float32) for _ in pos]
    affine = np.array([[0.45, 0.02, -1000.0], [0.02, -0.45, 1000.0]])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, {platform.python_version()}"
    )
    print(f"montage: {n}x{n} tiles of {size}x{size}, overlap {args.overlap:.0%}")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {
            "epu": write_epu_atlas(Path(tmp) / "epu", tiles, pos, 4500.0, affine, None),
            "serialem": write_serialem_montage(
                Path(tmp) / "sem" / "m.mrc", tiles, pos, 4500.0, affine
            ),
        }
        for fmt, path in inputs.items():
            source = open_atlas(path)
            t_open = _median_time(lambda p=path: open_atlas(p), args.repeats)
            t_load = _median_time(lambda s=source: [load_tile(s, t) for t in s.tiles], args.repeats)
            t_stitch = _median_time(lambda s=source: stitch(s), args.repeats)
            shape = stitch(source).image.shape
            print(
                f"{fmt:9s} open_atlas {t_open * 1e3:7.1f} ms | load tiles {t_load:6.3f} s | "
                f"stitch (load + blend) {t_stitch:6.3f} s | blend ~{t_stitch - t_load:6.3f} s | "
                f"montage {shape[1]}x{shape[0]}"
            )
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "epu"
    if real.is_dir():
        t = _median_time(lambda: open_atlas(real), args.repeats)
        print(f"real EPU Atlas.dm (trimmed, 423 kB) open_atlas {t * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
