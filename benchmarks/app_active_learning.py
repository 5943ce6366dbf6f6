"""Active learning against random choice (issue 9, measurement a).

Simulated atlases with the truth as the oracle. A pool of atlases provides the
squares to label; one more atlas is held out and never trained on. Starting
from the shipped model, each method labels squares in rounds up to each budget
(e.g. 25, 50, 100, 200 labels): *active* asks the app's ranking
(:func:`cryoscout.screening.active.analyse` + :func:`~cryoscout.screening.active.suggest`,
with the model of the previous round), *random* draws at random. After each
round the shipped model is fine-tuned on the labels so far (plus as many
unlabeled squares, semi-supervised) with the app's training code
(``train_run(init="default")``), and the mean absolute error of the predicted
overall score on the held-out atlas is measured. Several seeds.

Target: active learning reaches random's error at the largest budget with at
most half its labels.

Run (extraction folders with ``labels.csv`` = truth, e.g. from
``benchmarks/make_screening_data.py``; the last folder is held out)::

    python benchmarks/app_active_learning.py /tmp/al/data/atlas0* --budgets 25 50 100 200 \
        --seeds 0 1 2 --epochs 5 --out /tmp/al/runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")


def held_out_error(model_dir, folder: Path) -> float:
    from cryoscout.io.squares import read_extraction
    from cryoscout.screening.data import labels_array
    from cryoscout.screening.predict import load_model

    data = read_extraction(folder)
    truth = labels_array(data.table, data.labels)[:, 4]
    pred = load_model(model_dir).predict(data.stack, attention=False).scores["overall"]
    ok = np.isfinite(truth)
    return float(np.mean(np.abs(pred.to_numpy()[ok] - truth[ok])))


def run(method: str, pool: list[Path], test: Path, budgets, seed: int, epochs: int, out: Path):
    from cryoscout.io.squares import read_extraction
    from cryoscout.screening.active import analyse, suggest
    from cryoscout.screening.module import train_run
    from cryoscout.screening.predict import load_model

    work = out / f"{method}-s{seed}"
    shutil.rmtree(work, ignore_errors=True)
    folders, truth, stacks, full = [], [], [], []
    for i, f in enumerate(pool):  # a private copy: labels.csv is rewritten each round
        dst = work / "data" / f"atlas{i}"
        dst.mkdir(parents=True)
        for name in ("squares.csv", "squares.mrcs"):
            shutil.copy(f / name, dst / name)
        data = read_extraction(f)
        folders.append(dst)
        truth.append(data.labels.set_index("square_id").reindex(data.table["square_id"]))
        stacks.append(data.stack)
        full.append(data.table["full"].to_numpy(bool) & truth[-1]["overall"].notna().to_numpy())
    ids = [(a, k) for a, t in enumerate(truth) for k in range(len(t))]
    can = np.concatenate(full)
    labeled = np.zeros(len(ids), bool)
    rng = np.random.default_rng(seed)
    model_dir, rows = None, []
    for budget in budgets:
        need = budget - labeled.sum()
        if method == "random":
            pick = rng.choice(np.flatnonzero(can & ~labeled), need, replace=False)
        else:
            model = load_model(model_dir)
            an = [analyse(model, s) for s in stacks]
            feats = np.concatenate([a.features for a in an])
            unc = np.concatenate([a.uncertainty for a in an])
            pick, _ = suggest(feats, unc, labeled, can & ~labeled, need)
        labeled[pick] = True
        for a, (f, t) in enumerate(zip(folders, truth, strict=True)):
            mine = [k for (aa, k), lab in zip(ids, labeled, strict=True) if lab and aa == a]
            # Labels as a user gives them in the app: integers 0-4.
            t.iloc[mine].round().reset_index().to_csv(f / "labels.csv", index=False)
        run_dir = work / f"b{budget}"
        t0 = time.perf_counter()
        train_run(
            folders,
            run_dir,
            n_labeled=-1,
            n_unlabeled=budget,
            epochs=epochs,
            seed=seed,
            lr=3e-4,
            test_fraction=0.0,
            accelerator="cpu",
            devices=1,
            init="default",
        )
        model_dir = run_dir
        err = held_out_error(run_dir, test)
        rows.append(
            dict(
                method=method,
                seed=seed,
                labels=budget,
                mae_overall=err,
                train_s=time.perf_counter() - t0,
            )
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="pool folders..., held-out folder last")
    ap.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    pool, test = args.folders[:-1], args.folders[-1]
    print(f"shipped model, held-out MAE overall: {held_out_error(None, test):.3f}", flush=True)
    rows = []
    for seed in args.seeds:
        for method in ("active", "random"):
            rows += run(method, pool, test, args.budgets, seed, args.epochs, args.out)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "results.csv", index=False)
    summary = table.groupby(["method", "labels"])["mae_overall"].agg(["mean", "std", "count"])
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
