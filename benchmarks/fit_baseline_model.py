"""Fit the gradient-boosted-trees baseline as a shipped scoring model (reproducible recipe).

The baseline (:mod:`cryoscout.screening.baseline`: hand-made features, one
``HistGradientBoostingRegressor`` per score) is fitted on every labeled square
of ``FOLDERS`` (extraction folders with ``labels.csv``), with the features of
``benchmarks/screening_quality.py`` (``cached_features``: squares normalised
per atlas and resized to ``--size``, cached per folder), and written as a
``cryoscout-baseline-gbt`` model file (trees as tensors, loadable with
``torch.load(weights_only=True)``). With ``--install`` it becomes the shipped
``baseline`` model (``cryoscout screen -m baseline``):
``src/cryoscout/models/baseline_gbt.pt`` + ``baseline_gbt.json``.

The file is checked before it is written anywhere: its trees must predict what
the scikit-learn regressors predict on the training features.

Example (the shipped baseline: the labels the shipped network, its tree head and its
calibration used; round 6's folders, built as in ``fit_tree_head.py`` and
``train_default_model.py``). The folders go in ``ls`` order, as to ``screening_quality.py
--train``: the regressors' early-stopping split follows the row order, and only the same
order gives the benchmark's in-run baseline exactly::

    $ D=/tmp/s18/ff
    $ TRAIN=$(ls -d $D/{train_a,train_b,head_a,head_b,head_w,calib,calib_w}/atlas* \\
        $D/{train_w,train_wc,head_w2,calib_w2,train_ld,train_w3,train_ld2}/atlas* \\
        $D/{head_ld,head_w3,calib_ld}/atlas* \\
        $D/{head_w4,head_ti,head_ld2}/atlas*)
    $ nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/fit_baseline_model.py $TRAIN \\
        --cache $D/featcache -o /tmp/s18/baseline_gbt.pt --seed 0 --install
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cryoscout.io.atomic import write_text
from cryoscout.models import SHIPPED
from cryoscout.screening.baseline import BaselineModel, save_baseline
from cryoscout.screening.model import SCORES
from cryoscout.screening.predict import load_model
from screening_quality import cached_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDERS",
                   help="Extraction folders with labels.csv.")  # fmt: skip
    p.add_argument("-o", "--out", type=Path, required=True, help="Model file to write.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the regressors.")
    p.add_argument("--size", type=int, default=128, help="Square size of the features.")
    p.add_argument("--cache", type=Path, help="Feature cache (screening_quality's).")
    p.add_argument("--install", action="store_true", help="Also ship it as 'baseline'.")
    args = p.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        x, y = cached_features(args.folders, args.size, args.cache or Path(tmp))
    labeled = ~np.isnan(y).all(axis=1)
    x, y = x[labeled], y[labeled]
    model = BaselineModel(seed=args.seed).fit(x, y)
    fit = {
        "data": [str(f) for f in args.folders],
        "n_labeled": len(y),
        "n_labeled_per_score": {s: int((~np.isnan(y[:, j])).sum()) for j, s in enumerate(SCORES)},
        "trees": {s: int(model.models[s].n_iter_) for s in SCORES},
        "fit_seconds": round(time.perf_counter() - start, 1),
    }
    recipe = "python benchmarks/fit_baseline_model.py " + shlex.join(sys.argv[1:])
    # A few training rows and what scikit-learn predicts for them, kept in the file: the
    # tests check that the shipped trees still give these numbers.
    rows = np.random.default_rng(args.seed).choice(len(x), 8, replace=False)
    check = {
        "features": x[rows].astype(np.float64).tolist(),
        "sklearn": {s: model.models[s].predict(x[rows]).tolist() for s in SCORES},
    }
    targets = [args.out] + ([SHIPPED["baseline"]] if args.install else [])
    for path in targets:
        save_baseline(path, model, size=args.size, normalisation="atlas", fit=fit,
                      recipe=recipe, check=check)  # fmt: skip
        # The file scores as the regressors do: a few hundred rows of the training features.
        rows = np.random.default_rng(args.seed).choice(len(x), min(500, len(x)), replace=False)
        trees = load_model(path).trees
        for s in SCORES:
            diff = np.abs(trees[s].predict(x[rows]) - model.models[s].predict(x[rows])).max()
            if diff > 1e-9:
                raise SystemExit(f"{path}: {s} trees differ from scikit-learn by {diff}")
    size_kb = round(args.out.stat().st_size / 1024, 1)
    print(json.dumps({**fit, "file_kB": size_kb}, indent=1), flush=True)
    if args.install:
        meta = load_model(SHIPPED["baseline"]).meta
        summary = {k: v for k, v in meta.items() if k != "check"}  # numbers for the tests
        summary |= {"file": SHIPPED["baseline"].name, "file_kB": size_kb}
        write_text(SHIPPED["baseline"].with_suffix(".json"), json.dumps(summary, indent=1) + "\n")
        print(f"installed {SHIPPED['baseline']} ({size_kb} kB)")


if __name__ == "__main__":
    main()
