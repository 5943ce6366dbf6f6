"""``czii_score`` against the CZII challenge's own metric code, on random cases.

The official metric (Kaggle "CZII - CryoET Object Identification", metric notebook
``czi-cryoet-84969``) is not ours to ship, so give the path of a copy of its Python source:
the module must define ``score(solution, submission, ...)`` taking DataFrames with
``experiment, particle_type, x, y, z`` (Å) and its own radii and weights. The cases put
points on a 10 Å grid and picks at multiples of 1, 5 and 10 Å from the true centres, so
many distances fall exactly on half a radius (the boundary), several true centres share a
pick, some types occur only in the picks and one experiment has no truth.

    python benchmarks/czii_check.py --official /path/to/czii_metric.py --cases 300
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect

import numpy as np
import pandas as pd

from cryoscout.picking.evaluate import czii_score

RADIUS_A = {
    "apo-ferritin": 60,
    "beta-amylase": 65,
    "beta-galactosidase": 90,
    "ribosome": 150,
    "thyroglobulin": 130,
    "virus-like-particle": 135,
}
WEIGHTS = {
    "apo-ferritin": 1,
    "beta-amylase": 0,
    "beta-galactosidase": 2,
    "ribosome": 1,
    "thyroglobulin": 2,
    "virus-like-particle": 1,
}


def random_case(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A solution and a submission over 1-3 experiments, as the challenge lays them out."""
    names = list(RADIUS_A)
    sol, sub = [], []
    types = rng.choice(names, size=rng.integers(1, 7), replace=False)
    for e in range(rng.integers(1, 4)):
        for t in types:
            pts = np.unique(rng.integers(0, 40, size=(rng.integers(0, 12), 3)) * 10.0, axis=0)
            for p in pts:
                sol.append((f"TS_{e}", t, *p))
                for _ in range(rng.integers(0, 3)):
                    step = 10.0 * rng.choice([0.1, 0.5, 1.0])
                    sub.append((f"TS_{e}", t, *(p + rng.integers(-8, 9, size=3) * step)))
            for _ in range(rng.integers(0, 4)):
                sub.append((f"TS_{e}", rng.choice(names), *(rng.integers(0, 40, 3) * 10.0)))
    sub.append(("TS_99", names[0], 0.0, 0.0, 0.0))  # an experiment without truth
    cols = ["experiment", "particle_type", "x", "y", "z"]
    return pd.DataFrame(sol, columns=cols), pd.DataFrame(sub, columns=cols)


def official_score(module, solution: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Call the official ``score`` with whichever arguments its version takes."""
    params = inspect.signature(module.score).parameters
    kwargs = {"distance_multiplier": 0.5, "beta": 4}
    if "row_id_column_name" in params:
        solution = solution.assign(id=range(len(solution)))
        submission = submission.assign(id=range(len(submission)))
        kwargs["row_id_column_name"] = "id"
    return float(module.score(solution.copy(), submission.copy(), **kwargs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, help="Python file of the official metric.")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("czii_official", args.official)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    rng = np.random.default_rng(args.seed)
    worst, n = 0.0, 0
    rename = {"experiment": "tomo", "particle_type": "class"}
    for _ in range(args.cases):
        solution, submission = random_case(rng)
        if solution.empty:
            continue
        ref = official_score(module, solution, submission)
        ours = czii_score(
            submission.rename(columns=rename), solution.rename(columns=rename), RADIUS_A, WEIGHTS
        ).score
        worst = max(worst, abs(ours - ref))
        n += 1
    print(f"{n} cases: largest |czii_score - official| = {worst:.3g}")


if __name__ == "__main__":
    main()
