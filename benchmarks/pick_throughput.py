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


def _random_net(path: Path) -> Path:
    """The CPU-sized picker (5 SHREC classes at 20 Å) with seeded random weights."""
    import torch

    from cryoscout.picking.data import NORMALIZATION
    from cryoscout.picking.unet import ResUNet3d
    from cryoscout.picking.weights import PickingModelInfo, save_model

    torch.manual_seed(0)
    net = ResUNet3d(5, (8, 16, 24, 32), "tomogram")
    names = ["4v94", "4cr2", "3d2f", "1bxn", "3qm1"]
    label_r = {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.0, 5: 1.0}
    info = PickingModelInfo(names, label_r, 32, dict(NORMALIZATION), 20.0)
    info.extra["particle_radius"] = {"1": 9.12, "2": 6.8, "3": 4.28, "4": 3.2, "5": 1.6}
    return save_model(path, net, info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", help="trained picker (model.pt)")
    ap.add_argument("--tomograms", type=int, default=6)
    ap.add_argument("--shape", default="64,160,160", help="z,y,x")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder")
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--voxel", type=float, default=None, help="Å (default: the model's)")
    ap.add_argument("--simulate-only", action="store_true")
    ap.add_argument(
        "--random-net",
        action="store_true",
        help="time a seeded, untrained CPU-sized network (channels 8,16,24,32) instead of -m",
    )
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cryoscout.io.mrc import write_mrc
    from cryoscout.picking.weights import load_model
    from picking import simulate

    shape = tuple(int(v) for v in a.shape.split(","))
    if a.random_net:
        a.model = str(_random_net(a.work / "random_net" / "model.pt"))
    voxel = a.voxel or (load_model(a.model)[1].voxel_size_A if not a.simulate_only else 20.0)
    tomos = a.work / "tomograms"
    tomos.mkdir(parents=True, exist_ok=True)
    paths = [tomos / f"TS_{i + 1:02d}.mrc" for i in range(a.tomograms)]
    if not all(p.is_file() for p in paths):  # kept from an earlier run of this script
        sims, _ = simulate(a.tomograms, shape, voxel, 70, 0.1, a.seed)
        for path, sim in zip(paths, sims, strict=True):
            write_mrc(path, sim.tomogram.astype(np.float32), voxel)
    if a.simulate_only:
        return
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
