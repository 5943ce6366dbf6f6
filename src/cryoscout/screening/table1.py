"""The protocol of the paper's Table 1, a baseline, and a by-grid split.

For each run (a random split of the labeled squares into training and held-out
test squares, drawn from the run's seed) every configuration
{primary, xcryonet} x {FS, SS} x labeled counts is trained and its mean
absolute difference per score measured on the held-out squares; the
gradient-boosted-trees baseline is trained on the same labeled squares. The
by-grid split holds out whole atlases instead (no square of a test atlas is
seen in training, labeled or not), as a facility would use the model on a new
grid; it is run at the largest labeled count. Runs are summarised as mean ± standard deviation.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.screening.data import ScreeningData, make_split, resize_stack, training_dataset
from cryoscout.screening.model import SCORES

#: Largest square size at which the baseline's features are computed.
BASELINE_SIZE = 128

KEYS = ["split", "method", "supervision", "n_labeled", "n_unlabeled"]


@dataclass
class Table1Config:
    """Options of the protocol (paper: size 640, 75 epochs, 4 runs)."""

    labeled: Sequence[int] = (100, 500, 900)
    unlabeled: int = 1500
    runs: int = 2
    epochs: int = 5
    size: int = 64
    width: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    test_fraction: float = 0.2
    methods: Sequence[str] = ("primary", "xcryonet")
    supervision: Sequence[str] = ("FS", "SS")
    baseline: bool = True
    random_split: bool = True
    by_grid: bool = True
    test_grids: int = 1
    seed: int = 0
    accelerator: str = "auto"
    precision: str = "32-true"
    workers: int = 0


def _train_eval(data, split, method, semi, cfg, seed, work_dir) -> tuple[dict, float, int]:
    """Train one configuration; return (MAD per score, seconds, squares seen)."""
    import torch

    from cryoscout.screening.module import XCryoNetModule, evaluate, fit

    torch.manual_seed(seed)
    module = XCryoNetModule(method, size=cfg.size, width=cfg.width, lr=cfg.lr)
    ds = training_dataset(data, split, semi_supervised=semi, seed=seed)
    start = time.perf_counter()
    fit(
        module,
        ds,
        work_dir,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        num_workers=cfg.workers,
    )
    seconds = time.perf_counter() - start
    # Lightning hands the module back on the CPU; score the test squares where it trained.
    on_gpu = cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    net = module.net.to("cuda" if on_gpu else "cpu")
    return evaluate(net, data.images[split.test], data.labels[split.test]), seconds, len(ds)


def baseline_features(images: np.ndarray, jobs: int = 1) -> np.ndarray:
    """The baseline's hand-made features of ``(n, s, s)`` normalised squares.

    Computed at :data:`BASELINE_SIZE` px at most, as the shipped baseline computes them:
    at 640 px they cost 30 times more (0.5 s a square) for the same information.
    ``jobs`` > 1 spreads the squares over that many processes.
    """
    from cryoscout.progress import track
    from cryoscout.screening.baseline import stack_features

    small = resize_stack(images, min(BASELINE_SIZE, images.shape[-1]))
    if jobs <= 1:
        return stack_features(track(small, "baseline features", total=len(small)))
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        return np.concatenate(list(pool.map(stack_features, np.array_split(small, jobs))))


def run_table1(data: ScreeningData, cfg: Table1Config, features: np.ndarray | None = None):
    """Run the protocol; one row per (split, configuration, run).

    Parameters
    ----------
    data
        Squares and labels of several atlases (at ``cfg.size``).
    cfg
        The protocol's options.
    features
        Precomputed baseline features ``(n, f)``; computed when needed and ``None``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`KEYS`, ``run``, the five scores (mean absolute
        difference on the test squares), ``n_test``, ``train_s`` and
        ``squares_per_s`` (training throughput).
    """
    from cryoscout.progress import track
    from cryoscout.screening.baseline import BaselineModel

    if cfg.baseline and features is None:
        features = baseline_features(data.images)
    n_atlases = int(data.atlas.max()) + 1
    rows = []
    jobs = []
    for run in range(cfg.runs):
        seed = cfg.seed + run
        for n_lab in cfg.labeled:
            if cfg.random_split:
                random = make_split(data, n_lab, cfg.unlabeled, seed, cfg.test_fraction)
                jobs.append(("random", run, seed, n_lab, random))
            # By-grid at the largest labeled count only: a facility labels other grids freely.
            if cfg.by_grid and n_atlases > cfg.test_grids and n_lab == max(cfg.labeled):
                # Rotate the held-out atlases from run to run.
                test = [(run * cfg.test_grids + k) % n_atlases for k in range(cfg.test_grids)]
                grid = make_split(data, n_lab, cfg.unlabeled, seed, test_atlases=test)
                jobs.append(("by-grid", run, seed, n_lab, grid))
    total = len(jobs) * (len(cfg.methods) * len(cfg.supervision) + int(cfg.baseline))
    bar = iter(track(range(total), "table1", total=total, unit="model"))
    with tempfile.TemporaryDirectory(prefix="table1-") as tmp:
        for split_name, run, seed, _n_lab, split in jobs:
            base = {"split": split_name, "run": run, "n_test": len(split.test)}
            for method in cfg.methods:
                for sup in cfg.supervision:
                    semi = sup == "SS"
                    if semi and len(split.unlabeled) == 0:
                        next(bar, None)
                        continue
                    work = Path(tmp) / f"{split_name}-{run}-{method}-{sup}-{len(split.labeled)}"
                    mad, secs, seen = _train_eval(data, split, method, semi, cfg, seed, work)
                    rows.append(
                        {
                            **base,
                            "method": method,
                            "supervision": sup,
                            "n_labeled": len(split.labeled),
                            "n_unlabeled": len(split.unlabeled) if semi else 0,
                            **mad,
                            "train_s": secs,
                            "squares_per_s": seen * cfg.epochs / secs,
                        }
                    )
                    next(bar, None)
            if cfg.baseline:
                from cryoscout.screening.metrics import mean_abs_diff

                start = time.perf_counter()
                model = BaselineModel(seed=seed).fit(
                    features[split.labeled], data.labels[split.labeled]
                )
                pred = model.predict(features[split.test])
                rows.append(
                    {
                        **base,
                        "method": "baseline-gbt",
                        "supervision": "FS",
                        "n_labeled": len(split.labeled),
                        "n_unlabeled": 0,
                        **mean_abs_diff(pred, data.labels[split.test]),
                        "train_s": time.perf_counter() - start,
                        "squares_per_s": np.nan,
                    }
                )
                next(bar, None)
    columns = ["split", "method", "supervision", "n_labeled", "n_unlabeled", "run"]
    return pd.DataFrame(rows)[[*columns, *SCORES, "n_test", "train_s", "squares_per_s"]]


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over runs of each configuration.

    Configurations are grouped by :data:`KEYS` (the labeled and unlabeled
    counts actually used).
    """
    agg = {s: ["mean", "std"] for s in SCORES}
    agg |= {"train_s": ["mean"], "squares_per_s": ["mean"], "run": ["count"]}
    summary = runs.groupby(KEYS, sort=False).agg(agg)
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    names = {"run_count": "runs", "train_s_mean": "train_s", "squares_per_s_mean": "squares_per_s"}
    summary = summary.rename(columns=names).reset_index()
    return summary


def to_markdown(summary: pd.DataFrame, note: str = "") -> str:
    """Table 1 as Markdown: ``mean ± std`` of the mean absolute difference (lower is better)."""
    head = ["Split", "Method", "Sup.", "#Labeled", "#Unlabeled", *(s.title() for s in SCORES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        cells = [r["split"], r["method"], r["supervision"], str(r["n_labeled"])]
        cells.append(str(r["n_unlabeled"]))
        for s in SCORES:
            std = r[f"{s}_std"]
            mean = r[f"{s}_mean"]
            cells.append(f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    return (note.rstrip() + "\n\n" + text) if note else text


def write_table1(out_dir: str | os.PathLike, runs: pd.DataFrame, note: str = "") -> list[Path]:
    """Write ``table1.md``, ``table1.csv`` (summary) and ``table1_runs.csv`` (every run)."""
    from cryoscout.io.atomic import write_text

    out_dir = Path(out_dir)
    summary = summarise(runs)
    return [
        write_text(out_dir / "table1_runs.csv", runs.to_csv(index=False, float_format="%.4f")),
        write_text(out_dir / "table1.csv", summary.to_csv(index=False, float_format="%.4f")),
        write_text(out_dir / "table1.md", to_markdown(summary, note)),
    ]
