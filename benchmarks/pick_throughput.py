"""Throughput of ``cryoscout pick predict`` on a folder of tomograms: tomograms per hour.

Simulates ``--tomograms`` tomograms (SHREC templates at the model's voxel size, 160x160x64
by default, as ``benchmarks/picking.py``) into a folder, then runs the real command on the
folder and reads each tomogram's time from its completion record.

    python benchmarks/pick_throughput.py -m RUN/model.pt --tomograms 6 --work /tmp/thr
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True, help="trained picker (model.pt)")
    ap.add_argument("--tomograms", type=int, default=6)
    ap.add_argument("--shape", default="64,160,160", help="z,y,x")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder")
    ap.add_argument("--seed", type=int, default=2000)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cryoscout.io.mrc import write_mrc
    from cryoscout.picking.weights import load_model
    from picking import simulate

    _, info = load_model(a.model)
    shape = tuple(int(v) for v in a.shape.split(","))
    voxel = info.voxel_size_A or 20.0
    tomos = a.work / "tomograms"
    tomos.mkdir(parents=True, exist_ok=True)
    sims, _ = simulate(a.tomograms, shape, voxel, 70, 0.1, a.seed)
    for i, s in enumerate(sims):
        write_mrc(tomos / f"TS_{i + 1:02d}.mrc", s.tomogram.astype(np.float32), voxel)
    out = a.work / "picks"
    cmd = ["cryoscout", "pick", "predict", "-m", a.model, str(tomos), "-o", str(out)]
    cmd += ["--accelerator", "cpu"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    per = [json.loads(p.read_text())["seconds"] for p in sorted(out.glob("*.done.json"))]
    print(
        json.dumps(
            {
                "command": " ".join(cmd),
                "tomograms": len(per),
                "shape_zyx": shape,
                "voxel_A": voxel,
                "wall_s": round(wall, 1),
                "per_tomogram_s": per,
                "median_s": float(np.median(per)),
                "tomograms_per_hour_wall": round(3600 * len(per) / wall, 1),
                "tomograms_per_hour_median": round(3600 / float(np.median(per)), 1),
                "load_avg_1min": os.getloadavg()[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
