"""Screening quality on atlases no model saw: issue 12's criteria, every model side by side.

One run does everything the issue asks to compare:

1. simulates ``--atlases`` atlases with settings the training sets never used
   (other seeds, meshes, films, lattice rotations, pixel sizes 350-750 nm, ice,
   dose and defect rates x0.5-2) and extracts them with the real extraction
   (``benchmarks/make_screening_data.py``'s code); their truth is the
   simulator's rubric without scorer noise (``label_noise=0``): what a square
   *is*, not what one scorer would say;
2. trains the gradient-boosted-trees baseline on the labels of ``--train``
   (pass every folder whose labels the candidate models used, so that the
   baseline gets the same labels);
3. scores the full squares of every unseen atlas with each ``--model`` and the
   baseline, and prints one markdown table (``--model baseline`` is the shipped
   baseline, ``models/baseline_gbt.pt``; the in-run ``baseline-gbt`` column is
   the equal-labels comparison):

* MAD and Spearman rank correlation per score (every atlas is unseen: a
  by-grid split); for cracking and contamination, where most squares are truly
  0 (one tied rank), also the Spearman ceiling, the most any score that gives
  every square its own value can reach (levels in the right order, ties broken
  at random; :func:`spearman_ceiling`), and the AUC of telling squares with
  any crack (contamination) from those with none;
* top-20 hit rate: of each atlas's 20 full squares ranked best by predicted
  overall, the share truly among the best (true overall 4 where the atlas has
  20 such squares, else at least the 20th best true overall); worst atlas and mean;
* calibration: mean predicted cracking and contamination of clean squares
  (true cracking and contamination both 0), and the mean prediction per true
  level 0-4 of every score, with whether it rises monotonically (levels with
  at least 5 squares).

Example (the figures of BENCHMARKS.md)::

    $ python benchmarks/screening_quality.py --train /tmp/s12/train_a/atlas0* \\
        /tmp/s12/train_b/atlas0* --work /tmp/s12/quality --atlases 6 --seed 12 \\
        --model default -o benchmarks/results/screening_quality.md
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cryoscout.io.atomic import write_text
from cryoscout.io.mrc import read_mrc
from cryoscout.progress import track
from cryoscout.screening.model import SCORES
from cryoscout.simulate.atlas import AtlasConfig
from make_screening_data import build_atlas

TOP_K = 20
MIN_LEVEL = 5  # squares a true level needs before its mean prediction counts


def unseen_config(rng: np.random.Generator, tiles: int) -> AtlasConfig:
    """Settings wider than the training builder's (films, pixel sizes, ice, dose, defects)."""
    defects = float(rng.choice([0.5, 1.0, 2.0]))
    return AtlasConfig(
        mesh=int(rng.choice([200, 300, 400])),
        film=str(rng.choice(["R1.2/1.3", "R2/1", "R2/2"])),
        pixel_size_nm=float(rng.uniform(350, 750)),
        tiles_x=tiles,
        tiles_y=tiles,
        ice_mean_nm=float(rng.uniform(50, 200)),
        broken_rate=float(0.08 * defects),
        crack_rate=float(np.clip(0.12 * rng.uniform(0.5, 2.5) * defects, 0, 0.5)),
        contamination_rate=float(np.clip(0.25 * rng.uniform(0.5, 2.0) * defects, 0, 0.6)),
        dry_rate=float(0.05 * rng.uniform(0.5, 2.0) * defects),
        bent_bar_rate=float(0.03 * defects),
        dose=float(rng.uniform(50, 250)),
        label_noise=0.0,
    )


def build_unseen(out: Path, n: int, seed: int, tiles: int, size: int) -> list[Path]:
    """Simulate and extract ``n`` unseen atlases into ``out/atlasNN`` (kept: reruns reuse them)."""
    rng = np.random.default_rng(seed)
    folders = []
    for i in track(range(n), "simulating unseen atlases", unit="atlas"):
        cfg = unseen_config(rng, tiles)
        sim_seed = int(rng.integers(2**31))
        folder = out / f"atlas{i:02d}"
        folders.append(folder)
        if not (folder / "labels.csv").is_file():
            build_atlas(cfg, sim_seed, folder, size, crop=False)
    return folders


def cached_features(folders: list[Path], size: int, cache: Path):
    """Normalised squares' hand-made features and labels of ``folders`` (cached per folder)."""
    from cryoscout.screening.baseline import stack_features
    from cryoscout.screening.data import load_screening_data

    feats, labels = [], []
    for folder in track(folders, "baseline features", unit="atlas"):
        key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
        path = cache / f"features_{size}_{key}.npz"
        if not path.is_file():
            data = load_screening_data([folder], size=size, normalisation="atlas")
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(path, features=stack_features(data.images), labels=data.labels)
        saved = np.load(path)
        feats.append(saved["features"])
        labels.append(saved["labels"])
    return np.concatenate(feats), np.concatenate(labels)


def full_squares(folder: Path) -> pd.DataFrame:
    """``squares.csv`` joined with the truth (``*_true``), full squares only, in stack order."""
    table = pd.read_csv(folder / "squares.csv")
    truth = pd.read_csv(folder / "labels.csv").rename(columns={s: f"{s}_true" for s in SCORES})
    df = table[["square_id", "full"]].reset_index().merge(truth, on="square_id", how="left")
    return df[(df["full"] == 1) & df["overall_true"].notna()]


def top_k_hits(pred: np.ndarray, true: np.ndarray, k: int = TOP_K) -> float:
    """Share of the ``k`` best-predicted squares whose truth is among the best ``k``.

    "Among the best" means a true overall of at least the ``k``-th best true
    value, capped at 4: with ``k`` truly excellent (4) squares on the atlas,
    only 4 counts; with fewer, the best available count too.
    """
    k = min(k, len(pred))
    threshold = min(4.0, float(np.sort(true)[::-1][k - 1]))
    chosen = np.argsort(-pred, kind="stable")[:k]
    return float(np.mean(true[chosen] >= threshold))


def spearman_ceiling(true: np.ndarray) -> float:
    """The highest Spearman correlation with ``true`` of a score without ties.

    Spearman is Pearson's correlation of ranks. Squares of one true level share
    one (mid)rank; a score that gives each its own value spreads them over the
    level's ranks, which costs correlation however the level is ordered inside
    (the truth is constant there, so the order inside a level does not change
    the covariance). The best such score ranks the levels in order.
    """
    t = np.asarray(true, dtype=np.float64)
    untied = np.lexsort((np.arange(len(t)), t)).argsort()  # levels in order, ties by position
    return float(spearmanr(untied, t).statistic)


def summarise(df: pd.DataFrame) -> dict:
    """The issue's figures for one model's predictions of every unseen atlas."""
    out: dict = {}
    for s in SCORES:
        out[f"{s} MAD"] = float(np.mean(np.abs(df[s] - df[f"{s}_true"])))
    for s in SCORES:
        out[f"{s} Spearman"] = float(spearmanr(df[s], df[f"{s}_true"]).statistic)
    for s in ("cracking", "contamination"):
        true = df[f"{s}_true"].to_numpy()
        out[f"{s} Spearman ceiling (scores without ties)"] = spearman_ceiling(true)
        out[f"{s} AUC, any vs none"] = float(roc_auc_score(true > 0, df[s]))
    hits = [top_k_hits(g["overall"].to_numpy(), g["overall_true"].to_numpy()) for _, g in
            df.groupby("atlas")]  # fmt: skip
    out["top-20 hit rate, worst atlas"] = min(hits)
    out["top-20 hit rate, mean"] = float(np.mean(hits))
    clean = (df["cracking_true"] == 0) & (df["contamination_true"] == 0)
    out["clean squares: mean cracking"] = float(df.loc[clean, "cracking"].mean())
    out["clean squares: mean contamination"] = float(df.loc[clean, "contamination"].mean())
    for s in SCORES:
        means = df.groupby(f"{s}_true")[s].agg(["mean", "size"])
        means = means[means["size"] >= MIN_LEVEL]["mean"]
        monotone = bool(np.all(np.diff(means.to_numpy()) > 0))
        levels = " ".join(f"{int(lv)}:{m:.2f}" for lv, m in means.items())
        out[f"{s} per true level"] = f"{levels} ({'rises' if monotone else 'NOT monotone'})"
    return out


def verdicts(rows: dict[str, dict], base: dict) -> dict[str, dict]:
    """Per model: which of the issue's targets it meets."""
    out = {}
    for name, r in rows.items():
        beats = all(r[f"{s} MAD"] < base[f"{s} MAD"] for s in SCORES)
        monotone = all("NOT" not in r[f"{s} per true level"] for s in SCORES)
        out[name] = {
            "MAD < baseline on every score": beats,
            "top-20 >= 90 % on every atlas": r["top-20 hit rate, worst atlas"] >= 0.9,
            "Spearman overall >= 0.92": r["overall Spearman"] >= 0.92,
            "Spearman cracking, contamination >= 0.7": min(
                r["cracking Spearman"], r["contamination Spearman"]
            )
            >= 0.7,
            "clean squares < 0.3 cracking, contamination": max(
                r["clean squares: mean cracking"], r["clean squares: mean contamination"]
            )
            < 0.3,
            "mean per true level monotone, every score": monotone,
        }
    return out


def markdown(rows: dict[str, dict], met: dict[str, dict]) -> str:
    """One table: a row per figure, a column per model."""
    names = list(rows)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in rows[names[0]]:
        cells = [
            f"{rows[n][key]:.2f}" if isinstance(rows[n][key], float) else str(rows[n][key])
            for n in names
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for key in next(iter(met.values())):
        cells = [("yes" if met[n][key] else "no") if n in met else "-" for n in names]
        lines.append(f"| **{key}** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from cryoscout.screening.baseline import BaselineModel
    from cryoscout.screening.predict import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", nargs="+", type=Path, required=True,
                   help="Extraction folders whose labels the models were trained on.")  # fmt: skip
    p.add_argument("--work", type=Path, required=True, help="Unseen atlases + feature cache.")
    p.add_argument("--atlases", type=int, default=6)
    p.add_argument("--seed", type=int, default=12, help="Seed of the unseen atlases.")
    p.add_argument("--tiles", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model", action="append", help="model.pt, run folder, or a shipped "
                   "model's name: 'default', 'baseline'.")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--out", type=Path, help="Also write the table here.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    folders = build_unseen(args.work / "unseen", args.atlases, args.seed, args.tiles, args.size)
    truth = []
    for i, folder in enumerate(folders):
        df = full_squares(folder)
        df["atlas"] = i
        truth.append(df)
    truth_all = pd.concat(truth, ignore_index=True)

    preds: dict[str, pd.DataFrame] = {}
    for name in args.model or ["default"]:
        model = load_model(None if name == "default" else name)
        parts = []
        for folder, df in zip(folders, truth, strict=True):
            stack, _ = read_mrc(folder / "squares.mrcs")
            scores = model.predict(stack, attention=False).scores
            parts.append(scores.iloc[df["index"].to_numpy()].reset_index(drop=True))
        preds[name] = pd.concat(parts, ignore_index=True)

    train_x, train_y = cached_features(args.train, args.size, args.work / "cache")
    labeled = ~np.isnan(train_y).all(axis=1)
    baseline = BaselineModel(seed=0).fit(train_x[labeled], train_y[labeled])
    eval_x, _ = cached_features(folders, args.size, args.work / "cache")
    index = np.concatenate(
        [
            df["index"].to_numpy() + offset
            for df, offset in zip(truth, _offsets(folders), strict=True)
        ]
    )
    preds["baseline-gbt"] = pd.DataFrame(baseline.predict(eval_x[index]), columns=list(SCORES))

    rows = {n: summarise(pd.concat([truth_all, pr], axis=1)) for n, pr in preds.items()}
    met = verdicts({n: r for n, r in rows.items() if n != "baseline-gbt"}, rows["baseline-gbt"])
    n_full = len(truth_all)
    header = (
        f"{len(folders)} unseen atlases (seed {args.seed}, {args.tiles}x{args.tiles} tiles), "
        f"{n_full} full squares; baseline trained on {int(labeled.sum())} labeled squares of "
        f"{len(args.train)} folders; {time.perf_counter() - start:.0f} s.\n\n"
    )
    text = header + markdown(rows, met)
    print(text)
    if args.out:
        write_text(args.out, text)


def _offsets(folders: list[Path]) -> list[int]:
    """Index of each folder's first square in the concatenated stack."""
    sizes = [len(pd.read_csv(f / "squares.csv")) for f in folders]
    return [int(x) for x in np.concatenate([[0], np.cumsum(sizes)[:-1]])]


if __name__ == "__main__":
    main()
