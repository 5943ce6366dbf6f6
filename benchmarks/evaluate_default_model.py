"""Evaluate screening models honestly on simulated atlases they never saw.

For each model and the full squares of the given extraction folders (built by
``benchmarks/make_screening_data.py`` with seeds not used for training), prints:

* per score: mean absolute difference (MAD) and Spearman rank correlation with the truth;
* the spread of predicted overall (quantiles, share >= 3) and the mean predicted
  overall of squares whose true overall is >= 3;
* the ranking test of ``tests/test_screen.py``: mean rank percentile (0 best,
  1 worst, ranked by predicted overall within each atlas) of broken (true
  squareness <= 1) or heavily contaminated (true contamination >= 3) squares vs
  the others, plus the share of those squares in the predicted bottom and top 10%;
* the scores of a real grid-square image (``--real``).

Example::

    $ python benchmarks/make_screening_data.py -o /tmp/h10/eval --atlases 3 --seed 7
    $ python benchmarks/evaluate_default_model.py /tmp/h10/eval/atlas0* \\
        --model /tmp/h10/stage1.pt --model default
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from cryoscout.io.mrc import read_mrc
from cryoscout.screening.model import SCORES
from cryoscout.screening.predict import load_model

REAL = Path("/work/shared/data/squares/leginon_08mar13e_00010gr_00004sq.mrc")


def predictions(model, folders: list[Path]) -> pd.DataFrame:
    """Predicted and true scores (``*_true``) of the full squares, with per-atlas rank pct."""
    parts = []
    for i, folder in enumerate(folders):
        stack, _ = read_mrc(folder / "squares.mrcs")
        table = pd.read_csv(folder / "squares.csv")
        labels = pd.read_csv(folder / "labels.csv")
        pred = model.predict(stack, attention=False).scores
        df = table[["square_id", "full"]].join(pred)
        df = df.merge(labels, on="square_id", suffixes=("", "_true"))
        df = df[df["full"] == 1].copy()
        # rank 0 = best predicted overall within its atlas, as screen ranks one atlas
        df["pct"] = df["overall"].rank(ascending=False, method="first").sub(1) / (len(df) - 1)
        df["atlas"] = i
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def summary(df: pd.DataFrame) -> dict[str, float]:
    """The figures of one model (see the module docstring)."""
    out: dict[str, float] = {"n": len(df)}
    for s in SCORES:
        out[f"{s}_mad"] = float(np.mean(np.abs(df[s] - df[f"{s}_true"])))
        out[f"{s}_rho"] = float(spearmanr(df[s], df[f"{s}_true"]).statistic)
    ov = df["overall"]
    for q in (0.1, 0.5, 0.9):
        out[f"overall_q{round(q * 100)}"] = float(ov.quantile(q))
    out["overall_max"] = float(ov.max())
    out["share_pred_ge3"] = float((ov >= 3).mean())
    good = df["overall_true"] >= 3
    out["share_true_ge3"] = float(good.mean())
    out["pred_overall_of_true_ge3"] = float(ov[good].mean())
    crack = df["cracking_true"]
    out["pred_cracking_of_true_ge3"] = float(df.loc[crack >= 3, "cracking"].mean())
    out["pred_cracking_of_true_le0.5"] = float(df.loc[crack <= 0.5, "cracking"].mean())
    bad = (df["squareness_true"] <= 1) | (df["contamination_true"] >= 3)
    out["n_bad"] = int(bad.sum())
    out["bad_pct"] = float(df.loc[bad, "pct"].mean())
    out["other_pct"] = float(df.loc[~bad, "pct"].mean())
    out["bad_share_bottom10"] = float(bad[df["pct"] >= 0.9].mean())
    out["bad_share_top10"] = float(bad[df["pct"] <= 0.1].mean())
    out["true_overall_top10"] = float(df.loc[df["pct"] <= 0.1, "overall_true"].mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path, help="Extraction folders with labels.csv.")
    p.add_argument(
        "--model", action="append", help="model.pt or run folder; 'default': the shipped one."
    )
    p.add_argument("--real", type=Path, default=REAL, help="A real grid-square image.")
    args = p.parse_args()
    rows = {}
    for name in args.model or ["default"]:
        model = load_model(None if name == "default" else name)
        rows[name] = summary(predictions(model, args.data))
        if args.real.is_file():
            image, _ = read_mrc(args.real)
            real = model.predict(image, attention=False).scores.iloc[0]
            rows[name] |= {f"real_{s}": float(real[s]) for s in SCORES}
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_rows", None, "display.float_format", "{:.2f}".format):
        print(table)


if __name__ == "__main__":
    main()
