"""XCryoNet's Table 1 at the paper's scale (640 px, 75 epochs) in a fixed GPU budget.

The paper trains every configuration four times for 75 epochs on 640 px squares
of 12 grids (~3000 squares; hours per configuration on a GTX 1080 Ti). A lent
GPU session here has minutes, so this script runs the configurations in order of
what they answer and stops starting new ones when the next would overrun
``--budget-s``:

1. the by-grid split (atlases never seen) at 900 labels: XCryoNet SS and FS
   against the gradient-boosted-trees baseline, the question the CPU-scale run
   left open (does the deep model beat hand-made features on a new grid?);
2. the random split at 900 labels, then at 100 and 500 labels, XCryoNet before
   the primary branch alone;
3. last, the primary branch alone on the by-grid split.

``--splits`` and ``--models`` (e.g. ``primary-FS``) narrow the list. Each
method's training rate comes from a short probe (epochs 2-3 of three on 320
squares) until a real configuration has measured it; ``--rate primary=620``
gives one measured before.

The data are 12 simulated atlases whose squares span 600-680 px natively (the
pixel size is drawn per mesh so that one lattice pitch covers the paper's
640 px; 10 x 10 tiles give ~100-400 squares per atlas). The baseline's
hand-made features are computed at 128 px, as the baseline runs in
``cryoscout screen``. Results are rewritten after every configuration
(``table1.md``, ``table1.csv``, ``table1_runs.csv`` and ``gpu.json`` with the
device, timings and the configurations left out), so a run cut short keeps what
it finished.

Example (on a GPU machine)::

    $ python benchmarks/table1_gpu.py --data /tmp/paper --out results640 \\
        --budget-s 480 --accelerator gpu --precision bf16-mixed --workers 8

One configuration with a known rate (the last H200 call in benchmarks/results/screening.md)::

    $ python benchmarks/table1_gpu.py --data /tmp/paper --out OUT --budget-s 175 \\
        --accelerator gpu --precision bf16-mixed --workers 8 --labeled 900 \\
        --splits by-grid --models primary-FS --rate primary=620 --no-baseline

A CPU smoke test of the same path (20 s)::

    $ python benchmarks/table1_gpu.py --data /tmp/tiny --out /tmp/tiny_out --atlases 4 \\
        --tiles 5 --size 32 --epochs 1 --labeled 30,60 --unlabeled 50 --jobs 2 \\
        --accelerator cpu --budget-s 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def build_data(args: argparse.Namespace) -> list[Path]:
    """Simulate and extract the atlases (resumes: built atlases are kept)."""
    cmd = [
        sys.executable, str(HERE / "make_screening_data.py"), "-o", str(args.data),
        "--atlases", str(args.atlases), "--seed", str(args.seed), "--size", str(args.size),
        "--tiles", str(args.tiles), "--square-px", "600", "680", "--jobs", str(args.jobs),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return sorted(args.data.glob("atlas*"))


def probe_rate(data, method: str, args: argparse.Namespace) -> float:
    """Training squares per second of ``method``, timed over two short epochs.

    The first of three epochs (start-up, worker spawn, cuDNN's autotuning) is not
    counted: on the H200 it made a rate that counted it 2-9 times too low.
    """
    import tempfile

    import pytorch_lightning as pl
    import torch

    from cryoscout.screening.data import SquareDataset
    from cryoscout.screening.module import XCryoNetModule, fit

    class EpochClock(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_epoch_end(self, trainer, module) -> None:
            self.ends.append(time.perf_counter())

    n = min(len(data), 10 * args.batch_size)
    module = XCryoNetModule(method, size=args.size, width=16)
    torch.manual_seed(args.seed)
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        fit(
            module, SquareDataset(data.images[:n], data.labels[:n]), tmp, epochs=3,
            batch_size=args.batch_size, accelerator=args.accelerator, devices=1,
            precision=args.precision, num_workers=args.workers, callbacks=[clock],
        )  # fmt: skip
    return 2 * n / (clock.ends[-1] - clock.ends[0])


def stages(
    labeled: list[int], splits: list[str], models: list[str]
) -> list[tuple[str, int, str, str]]:
    """``(split, n_labeled, method, supervision)`` in order of priority.

    ``splits`` and ``models`` (``method-supervision``, e.g. ``primary-FS``) choose
    which to run.
    """
    top = max(labeled)
    order = [("by-grid", top), ("random", top)]
    order += [("random", n) for n in sorted(labeled) if n != top]
    out = []
    for split, n in order:
        if split not in splits:
            continue
        chosen = [m for m in ("xcryonet-SS", "xcryonet-FS", "primary-SS", "primary-FS")]
        chosen = [m.split("-") for m in chosen if m in models]
        out += [(split, n, method, sup) for method, sup in chosen]
    # The primary branch alone on the by-grid split matters least: put it last.
    first = [s for s in out if not (s[0] == "by-grid" and s[2] == "primary")]
    return first + [s for s in out if s[0] == "by-grid" and s[2] == "primary"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="Folder of the atlases (built).")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=480, help="Seconds for the whole script.")
    p.add_argument("--atlases", type=int, default=12)
    p.add_argument("--tiles", type=int, default=10)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--epochs", type=int, default=75)
    p.add_argument("--labeled", default="100,500,900")
    p.add_argument("--unlabeled", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=12, help="Processes for data and features.")
    p.add_argument("--workers", type=int, default=0, help="Batch-loading processes.")
    p.add_argument("--splits", default="by-grid,random")
    p.add_argument("--models", default="xcryonet-SS,xcryonet-FS,primary-SS,primary-FS")
    p.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="METHOD=SQUARES_PER_S",
        help="A training rate measured before (skips that method's probe).",
    )
    p.add_argument("--no-baseline", action="store_true", help="Leave the baseline out.")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--precision", default="32-true")
    args = p.parse_args()
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    from cryoscout.screening.data import load_screening_data
    from cryoscout.screening.table1 import (
        Table1Config,
        baseline_features,
        run_table1,
        write_table1,
    )

    torch.backends.cudnn.benchmark = True  # one input size throughout
    folders = build_data(args)
    data = load_screening_data(folders, size=args.size)
    t_data = time.monotonic() - start
    features = None if args.no_baseline else baseline_features(data.images, args.jobs)
    t_features = time.monotonic() - start - t_data
    labeled = [int(v) for v in args.labeled.split(",")]
    # Squares per second of training, per method.
    rates = {k: float(v) for k, v in (r.split("=") for r in args.rate)}
    rows: list[pd.DataFrame] = []
    record = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "argv": sys.argv,
        "squares": len(data),
        "labeled_squares": int(data.labeled.sum()),
        "atlases": len(folders),
        "data_s": round(t_data, 1),
        "features_s": round(t_features, 1),
        "atlas_configs": [
            {k: info[k] for k in ("mesh", "film", "pixel_size_nm", "ice_mean_nm", "n_squares")}
            for info in (json.loads((f / "atlas.json").read_text()) for f in folders)
        ],
        "done": [],
        "left_out": [],
    }
    baselined: set[tuple[str, int]] = set()
    todo = stages(labeled, args.splits.split(","), args.models.split(","))
    for split, n_lab, method, sup in todo:
        with_baseline = (
            split,
            n_lab,
        ) not in baselined and not args.no_baseline  # with the first model that runs
        cfg = Table1Config(
            labeled=[n_lab], unlabeled=args.unlabeled, runs=1, epochs=args.epochs,
            size=args.size, batch_size=args.batch_size, methods=[method], supervision=[sup],
            baseline=with_baseline, random_split=split == "random", by_grid=split == "by-grid",
            seed=args.seed, accelerator=args.accelerator, precision=args.precision,
            workers=args.workers,
        )  # fmt: skip
        squares = n_lab + (args.unlabeled if sup == "SS" else 0)
        name = f"{split} {n_lab} {method} {sup}"
        if method not in rates and time.monotonic() - start < args.budget_s:
            rates[method] = probe_rate(data, method, args)
            record[f"probe_{method}_squares_per_s"] = round(rates[method], 1)
        left = args.budget_s - (time.monotonic() - start)
        need = 1.1 * squares * args.epochs / rates[method] if method in rates else np.inf
        if need > left:
            record["left_out"].append(f"{name} (needs ~{need:.0f} s, {left:.0f} s left)")
            continue
        result = run_table1(data, cfg, features=features)
        nets = result[result["method"] == method]
        if nets.empty:  # SS with no unlabeled square left over
            record["left_out"].append(f"{name} (no unlabeled squares)")
            continue
        rates[method] = float(nets["squares_per_s"].iloc[0])
        rows.append(result)
        baselined.add((split, n_lab))
        record["done"].append(f"{name}: {float(nets['train_s'].iloc[0]):.0f} s")
        record["seconds"] = round(time.monotonic() - start, 1)
        runs = pd.concat(rows, ignore_index=True)
        note = (
            f"{record['device']}, torch {record['torch']}, precision {args.precision}; "
            f"{len(folders)} atlases, {len(data)} squares at {args.size} px, "
            f"{args.epochs} epochs, 1 run (seed {args.seed})."
        )
        write_table1(args.out, runs, note)
        (args.out / "gpu.json").write_text(json.dumps(record, indent=1))
        print(f"[{record['seconds']:.0f} s] {record['done'][-1]}", flush=True)
    (args.out / "gpu.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
