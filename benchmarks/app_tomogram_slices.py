"""Slice latency of the app's tomogram viewer (issue 10: < 100 ms for a new z slice, warm).

Writes a 1024 x 1024 x 500 float32 tomogram (2 GB, 10 Å voxels, smooth structure plus
noise) once to ``--tomogram`` (memory-mapped writes, never in memory whole), adds it to a
fresh app project and times ``GET /api/tomograms/1/slice.png`` through the HTTP stack
(FastAPI ``TestClient``: routing, validation, reading, contrast, PNG encoding; no
network) for axis z/y/x and bin 1/2:

- **add**: ``POST /api/tomograms`` (header check + memory map + the contrast subsample of
  16 sections, stored in the database).
- **cold**: the first request of each (axis, bin) after the file's pages were dropped
  from the page cache (``posix_fadvise(DONTNEED)`` with no mapping left open: the server's
  memory maps are closed first) and with a new app (no open memory map); the contrast
  table comes from the database (bin 1) or is computed then (bin 2: 16 binned sections,
  included in the figure).
- **warm server, cold pages** (z only): server open, file not in the page cache: the
  first look at a big tomogram that was never read.
- **warm**: the file in the page cache and the server open; each request a *new* index
  (nothing is cached by the app per slice). Median and 95th percentile of ``--repeats``.

Run::

    python benchmarks/app_tomogram_slices.py --tomogram /tmp/cryoscout-bench/tomo_1024x1024x500.mrc
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")

SHAPE = (500, 1024, 1024)  # (z, y, x)
VOXEL_A = 10.0


def write_tomogram(path: Path, seed: int = 0) -> None:
    """A 2 GB float32 MRC written 20 sections at a time through a writable memory map."""
    import mrcfile
    from scipy.ndimage import gaussian_filter

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.normal(size=(SHAPE[1] // 8, SHAPE[2] // 8)), 3).astype(np.float32)
    smooth = np.kron(base, np.ones((8, 8), np.float32)) * 20
    tmp = path.with_name(path.name + ".partial")
    with mrcfile.new_mmap(tmp, shape=SHAPE, mrc_mode=2, overwrite=True) as mrc:
        for z in range(0, SHAPE[0], 20):
            n = min(20, SHAPE[0] - z)
            chunk = rng.normal(size=(n, *SHAPE[1:])).astype(np.float32)
            chunk += smooth * np.cos(z / 40.0)
            mrc.data[z : z + n] = chunk
        mrc.voxel_size = VOXEL_A
    tmp.rename(path)


def drop_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (no root needed; pages must be unmapped)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> float:
    """Read the whole file once (into the page cache); returns seconds."""
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    return time.perf_counter() - t0


def get(client, url: str) -> float:
    t0 = time.perf_counter()
    r = client.get(url)
    dt = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return dt * 1000.0


def new_app(project: Path, data: Path):
    from fastapi.testclient import TestClient

    from cryoscout.app.server import create_app
    from cryoscout.app.tomograms import VOLUMES

    VOLUMES.clear()  # as in a new server process: no memory map open
    gc.collect()
    return TestClient(create_app(project, data_roots=[data], run_jobs=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tomogram", type=Path, default=Path("/tmp/cryoscout-bench/tomo_1024x1024x500.mrc")
    )
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    path = args.tomogram
    if not path.is_file():
        t0 = time.perf_counter()
        write_tomogram(path)
        size = path.stat().st_size / 2**30
        print(f"wrote {path} ({size:.2f} GiB) in {time.perf_counter() - t0:.1f} s")
    n = {"z": SHAPE[0], "y": SHAPE[1], "x": SHAPE[2]}
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="cryoscout-slices-") as tmp:
        project = Path(tmp) / "project"
        drop_cache(path)
        with new_app(project, path.parent) as c:
            t0 = time.perf_counter()
            r = c.post("/api/tomograms", json={"path": str(path)})
            assert r.status_code == 201, r.text
            dt = time.perf_counter() - t0
            print(f"add (contrast subsample of 16 sections, cold pages): {dt:.2f} s")

        print("\ncold: new app, file dropped from the page cache, first request (ms)")
        cold = {}
        for axis in ("z", "y", "x"):
            for b in (1, 2):
                with new_app(project, path.parent) as c:
                    drop_cache(path)
                    i = int(rng.integers(0, n[axis]))
                    cold[axis, b] = get(
                        c, f"/api/tomograms/1/slice.png?axis={axis}&index={i}&bin={b}"
                    )
                print(f"  axis {axis} bin {b}: {cold[axis, b]:8.1f}")

        print("\nwarm server, cold pages (z): new index each time, file dropped before each (ms)")
        with new_app(project, path.parent) as c:
            get(c, "/api/tomograms/1/slice.png?axis=z&index=0&bin=2")  # open + bin-2 contrast
            for b in (1, 2):
                times = []
                for _ in range(5):
                    drop_cache(path)  # pages of new sections only: mapped ones stay
                    i = int(rng.integers(0, n["z"]))
                    times.append(get(c, f"/api/tomograms/1/slice.png?axis=z&index={i}&bin={b}"))
                med = statistics.median(times)
                print(f"  axis z bin {b}: median {med:7.1f}  max {max(times):7.1f}")

        read_s = warm_cache(path)
        print(f"\nwarm: file in the page cache ({read_s:.1f} s to read it), server open, new index")
        print("each time (ms)")
        with new_app(project, path.parent) as c:
            for axis in ("z", "y", "x"):
                for b in (1, 2):
                    get(
                        c, f"/api/tomograms/1/slice.png?axis={axis}&index=0&bin={b}"
                    )  # open, contrast
                    idx = rng.choice(np.arange(1, n[axis]), size=args.repeats, replace=False)
                    times = sorted(
                        get(c, f"/api/tomograms/1/slice.png?axis={axis}&index={i}&bin={b}")
                        for i in idx
                    )
                    p95 = float(np.percentile(times, 95))
                    med = statistics.median(times)
                    print(f"  axis {axis} bin {b}: median {med:7.1f}  p95 {p95:7.1f}")
    print(f"\nload average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
