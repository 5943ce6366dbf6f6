"""Measure square extraction against simulator truth (not a test: run by hand).

    $ python benchmarks/extraction.py                 # the benchmark set, table to stdout
    $ python benchmarks/extraction.py --quick         # three atlases
    $ python benchmarks/extraction.py --calibrate     # fit the label calibration constants

For every simulated atlas (mesh, rotation, pixel size and defect rates varied) it
reports precision and recall of full squares (a found square marked full must sit
within half a pitch of a square the truth calls full; every true full square must be
found),
the centre error in % of the pitch, agreement of the ``full`` flag, the
extraction wall and CPU time (warm: imports and a first run done; the CPU time
of this process is the fairer figure on a shared machine) and the agreement of
the automatic labels with the truth (mean absolute difference on the 0-4 scale
against the rounded truth scores, Pearson r against the continuous ones).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

os.environ.setdefault("CRYOSCOUT_NO_PROGRESS", "1")

from cryoscout.atlas.evaluate import match_to_truth
from cryoscout.atlas.extract import extract_squares
from cryoscout.atlas.labels import brightness_raw, squareness_raw
from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas

HEAVY = dict(broken_rate=0.25, crack_rate=0.4, contamination_rate=0.6, bent_bar_rate=0.1)


@dataclass
class Case:
    name: str
    config: AtlasConfig
    seed: int


def benchmark_set() -> list[Case]:
    """5x5 atlases of 1024 px tiles spanning mesh, rotation, pixel size and defects."""
    m5 = dict(pixel_size_nm=500.0)
    spec = [
        ("300 mesh, 500 nm, 30 deg", dict(mesh=300, rotation_deg=30.0, **m5)),
        ("200 mesh, 700 nm, 45 deg", dict(mesh=200, pixel_size_nm=700.0, rotation_deg=45.0)),
        ("400 mesh, 700 nm, 80 deg", dict(mesh=400, pixel_size_nm=700.0, rotation_deg=80.0)),
        ("200 mesh, 300 nm, 0 deg", dict(mesh=200, pixel_size_nm=300.0, rotation_deg=0.0)),
        ("300 mesh, 200 nm, 60 deg", dict(mesh=300, pixel_size_nm=200.0, rotation_deg=60.0)),
        ("400 mesh, 100 nm, 10 deg", dict(mesh=400, pixel_size_nm=100.0, rotation_deg=10.0)),
        ("400 mesh, 400 nm, 89.5 deg", dict(mesh=400, pixel_size_nm=400.0, rotation_deg=89.5)),
        ("200 mesh, 500 nm, 15 deg, R2/1", dict(mesh=200, rotation_deg=15.0, film="R2/1", **m5)),
        ("300 mesh, 500 nm, 45 deg, heavy defects",
         dict(mesh=300, rotation_deg=45.0, **m5, **HEAVY)),
        ("400 mesh, 600 nm, 72 deg, heavy defects",
         dict(mesh=400, pixel_size_nm=600.0, rotation_deg=72.0, **HEAVY)),
    ]  # fmt: skip
    return [Case(name, AtlasConfig(**kw), seed) for seed, (name, kw) in enumerate(spec)]


def calibration_set() -> list[Case]:
    """Smaller atlases (3x3 tiles of 768 px) for fitting the label calibration, seeds 100-111."""
    rng = np.random.default_rng(0)
    cases = []
    for k in range(12):
        mesh = (200, 300, 400)[k % 3]
        kw = dict(
            mesh=mesh,
            pixel_size_nm=float(rng.uniform(150, 700)),
            rotation_deg=float(rng.uniform(0, 90)),
            tiles_x=3,
            tiles_y=3,
            tile_size=768,
        )
        cases.append(Case(f"cal {k}", AtlasConfig(**kw), 100 + k))
    return cases


def evaluate(case: Case, size: int) -> tuple[dict, pd.DataFrame]:
    """Extract one simulated atlas; figures against truth and the matched raw label measures."""
    t0 = time.perf_counter()
    sim = simulate_atlas(case.config, seed=case.seed)
    montage = sim.montage  # flat-fielded and stitched: stitching's cost, not extraction's
    t_sim = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    ext = extract_squares(montage, size=size)
    t_ext, c_ext = time.perf_counter() - t0, time.process_time() - c0
    table, truth = ext.table, sim.truth
    pitch_true = {200: 125.0, 300: 83.0, 400: 62.0}[case.config.mesh] * 1e4 / sim.pixel_size_A
    m = match_to_truth(
        table[["x_px", "y_px"]].to_numpy(), truth[["x_px", "y_px"]].to_numpy(), 0.5 * pitch_true
    )
    true_full = np.flatnonzero(truth["full"].to_numpy() == 1)
    found_full = np.flatnonzero(table["full"].to_numpy() == 1)
    recall = float(np.isin(true_full, m.truth_index).mean()) if len(true_full) else 1.0
    # A found full square counts when it pairs with a square that the truth calls full
    # (squares cut by the image edge or the copper rim of the grid are partial).
    pair_of = dict(zip(m.found_index.tolist(), m.truth_index.tolist(), strict=True))
    tf = truth["full"].to_numpy()
    hits = [k in pair_of and tf[pair_of[k]] == 1 for k in found_full]
    precision = float(np.mean(hits)) if len(found_full) else 1.0
    # Centre errors over pairs whose true square is full (partial ones have clipped centres).
    pair_full = truth["full"].to_numpy()[m.truth_index] == 1
    err = m.distance[pair_full] / pitch_true * 100
    flag_agree = float(
        np.mean(table["full"].to_numpy()[m.found_index] == truth["full"].to_numpy()[m.truth_index])
    )
    mt = truth.iloc[m.truth_index].reset_index(drop=True)
    found = table.iloc[m.found_index].reset_index(drop=True)
    stack = ext.stack[m.found_index]
    pairs = pd.DataFrame(
        {
            "case": case.name,
            "full": mt["full"].to_numpy(),
            "b_raw": brightness_raw(stack, ext.opening_px),
            "s_raw": [squareness_raw(c) for c in stack],
            "brightness": found["brightness"].to_numpy(),
            "squareness": found["squareness"].to_numpy(),
            "t_brightness": mt["brightness"].to_numpy(),
            "t_squareness": mt["squareness"].to_numpy(),
            "t_brightness_value": mt["brightness_value"].to_numpy(),
            "t_squareness_value": mt["squareness_value"].to_numpy(),
        }
    )
    row = {
        "atlas": case.name,
        "montage": f"{sim.image.shape[1]}x{sim.image.shape[0]}",
        "pitch_px": round(pitch_true, 1),
        "true_full": len(true_full),
        "found": len(table),
        "found_full": len(found_full),
        "precision_full": precision,
        "recall_full": recall,
        "err_mean_pct": float(err.mean()) if len(err) else float("nan"),
        "err_max_pct": float(err.max()) if len(err) else float("nan"),
        "full_flag_agree": flag_agree,
        "extract_s": t_ext,
        "extract_cpu_s": c_ext,
        "simulate_s": t_sim,
    }
    return row, pairs


def label_agreement(pairs: pd.DataFrame) -> pd.DataFrame:
    """MAD vs the rounded truth and Pearson r vs the continuous truth, full squares only."""
    p = pairs[pairs["full"] == 1]
    rows = []
    for col in ("brightness", "squareness"):
        rows.append(
            {
                "label": col,
                "n": len(p),
                "mean_abs_diff": float(np.mean(np.abs(p[col] - p[f"t_{col}"]))),
                "pearson_r": float(np.corrcoef(p[col], p[f"t_{col}_value"])[0, 1]),
            }
        )
    return pd.DataFrame(rows)


def fit_calibration(pairs: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Least-squares ``truth_value = offset + slope * raw`` on full squares."""
    p = pairs[pairs["full"] == 1].dropna(subset=["b_raw", "s_raw"])
    out = {}
    for name, raw in (("brightness", "b_raw"), ("squareness", "s_raw")):
        slope, offset = np.polyfit(p[raw], p[f"t_{name}_value"], 1)
        out[name] = (round(float(offset), 3), round(float(slope), 3))
    return out


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which is not a dependency)."""

    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + " --- |" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three atlases only")
    parser.add_argument("--calibrate", action="store_true", help="fit the label calibration")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    cases = calibration_set() if args.calibrate else benchmark_set()
    if args.quick:
        cases = cases[:3]
    # Warm up: imports and first-call costs are not the per-atlas time.
    small = AtlasConfig(tiles_x=1, tiles_y=1, tile_size=512, rotation_deg=20.0)
    extract_squares(simulate_atlas(small, seed=0).montage, size=args.size)

    rows, all_pairs = [], []
    for case in cases:
        row, pairs = evaluate(case, args.size)
        rows.append(row)
        all_pairs.append(pairs)
        print(
            f"{row['atlas']:42s} P {row['precision_full']:.3f} R {row['recall_full']:.3f} "
            f"err {row['err_mean_pct']:.2f}% (max {row['err_max_pct']:.2f}%) "
            f"full agree {row['full_flag_agree']:.3f} "
            f"extract {row['extract_s']:.2f} s (CPU {row['extract_cpu_s']:.2f} s)",
            flush=True,
        )
    pairs = pd.concat(all_pairs, ignore_index=True)
    pairs.to_csv(f"extraction_pairs{'_calibration' if args.calibrate else ''}.csv", index=False)
    results = pd.DataFrame(rows)
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")  # fmt: skip
    print(markdown(results))
    print()
    print(markdown(label_agreement(pairs)))
    if args.calibrate:
        print()
        print("fitted calibration (offset, slope):", fit_calibration(pairs))


if __name__ == "__main__":
    main()
