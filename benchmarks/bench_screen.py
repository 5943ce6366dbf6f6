"""Measure ``cryoscout screen``: wall time, report size, and how it ranks defects.

Simulates atlases with known truth (EPU format, fixed seeds), screens each one
with the default model, and reports per atlas:

- wall time of the simulation and of the screen (open, stitch, extract, score, write);
- the size of report.html;
- ranking quality against the simulator's truth: Spearman correlation of
  predicted and true overall over matched full squares; the mean rank
  percentile (0 = best, 1 = worst) of truly broken/heavily contaminated
  squares versus the others; and how many of the top-K targets are truly good
  (true overall >= 3).

Run::

    python benchmarks/bench_screen.py --atlases 3 --out /tmp/bench_screen

Prints a Markdown table; add ``--results FILE`` to write it there too.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")


def match_truth(scores: pd.DataFrame, truth: pd.DataFrame, max_dist: float) -> pd.DataFrame:
    """Pair each screened square with the nearest true square within ``max_dist`` pixels."""
    from scipy.spatial import cKDTree

    tree = cKDTree(truth[["x_px", "y_px"]].to_numpy())
    dist, idx = tree.query(scores[["x_px", "y_px"]].to_numpy())
    ok = dist <= max_dist
    t = truth.iloc[idx[ok]].reset_index(drop=True).add_prefix("true_")
    return pd.concat([scores[ok].reset_index(drop=True), t], axis=1)


def bad_mask(m: pd.DataFrame) -> np.ndarray:
    """Truly broken (squareness <= 1.5) or heavily contaminated (>= 2.5) squares."""
    return ((m["true_squareness"] <= 1.5) | (m["true_contamination"] >= 2.5)).to_numpy()


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table without the optional ``tabulate`` dependency."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atlases", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--model", default=None, help="run folder; default: the shipped model")
    p.add_argument("--out", default="/tmp/bench_screen")
    p.add_argument("--results", default=None, help="also write the table to this file")
    args = p.parse_args(argv)

    from scipy.stats import spearmanr

    from cryoscout.screening.screen import make_example_atlas, screen

    rows = []
    for k in range(args.atlases):
        seed = args.first_seed + k
        folder = Path(args.out) / f"atlas_{seed}"
        t0 = time.perf_counter()
        atlas = make_example_atlas(folder / "atlas", seed=seed)
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = screen(atlas, folder / "screen", model_dir=args.model, top_k=args.top_k)
        t_screen = time.perf_counter() - t0
        truth = pd.read_csv(Path(atlas).parent / "truth.csv")
        pitch = np.median(np.diff(np.sort(truth["x_px"].to_numpy())))
        m = match_truth(res.scores, truth, max_dist=max(pitch, 10) * 0.3)
        full = m[(m["full"] == 1) & (m["true_full"] == 1)]
        rho = (
            spearmanr(full["overall"], full["true_overall"]).statistic if len(full) > 2 else np.nan
        )
        pct = (full["rank"] - 1) / max(len(res.scores) - 1, 1)
        bad = bad_mask(full)
        top = full[full["rank"] <= args.top_k]
        rows.append(
            {
                "seed": seed,
                "squares": len(res.scores),
                "full matched": len(full),
                "simulate (s)": round(t_sim, 1),
                "screen (s)": round(t_screen, 1),
                "report (MB)": round(res.report.stat().st_size / 1e6, 2),
                "Spearman overall": round(float(rho), 3),
                "bad squares": int(bad.sum()),
                "rank pct bad": round(float(pct[bad].mean()), 3) if bad.any() else np.nan,
                "rank pct others": round(float(pct[~bad].mean()), 3),
                "top-K truly good": f"{int((top['true_overall'] >= 3).sum())}/{len(top)}",
            }
        )
        print(rows[-1], file=sys.stderr)
    table = pd.DataFrame(rows)
    text = (
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores visible, Python {platform.python_version()}\n\n"
        + markdown(table)
    )
    print(text)
    if args.results:
        Path(args.results).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
