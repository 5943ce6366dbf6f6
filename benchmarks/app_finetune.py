"""Fine-tuning time with 100 labels (issue 9, measurement b).

Runs the app's training job exactly as ``POST /api/train`` with its defaults
does (:func:`cryoscout.app.operations.run_train` on a project): fine-tunes the
current model (the shipped default) with XCryoNet's three-step semi-supervised
training on 100 labeled squares plus 200 unlabeled ones, 5 epochs, then
rescoring is *not* included. The labels are the simulator's truth on 100
random full squares. Prints the wall time and the held-out error before and
after (on 20 % of the labels, held out by the training itself).

Run (extraction folders with ``labels.csv`` = truth)::

    python benchmarks/app_finetune.py /tmp/al/data/atlas0* --out /tmp/finetune
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


def main() -> None:
    from cryoscout.app import db
    from cryoscout.app.operations import Reporter, run_train
    from cryoscout.app.project import Project

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--unlabeled", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    project = Project(args.out)
    rng = np.random.default_rng(args.seed)
    pool = []
    for i, f in enumerate(args.folders):  # register the folders as screened atlases
        atlas_id = i + 1
        shutil.copytree(f, project.extraction_dir(atlas_id))
        table = pd.read_csv(f / "squares.csv")
        truth = pd.read_csv(f / "labels.csv").set_index("square_id")
        with db.transaction(project.conn) as c:
            c.execute(
                "INSERT INTO atlases (id, name, path, folder, status, created) "
                "VALUES (?, ?, ?, ?, 'ready', ?)",
                (atlas_id, f.name, str(f), f"atlases/{atlas_id}", db.now()),
            )
            c.executemany(
                "INSERT INTO squares (atlas_id, square_id, idx, x_px, y_px, full) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (atlas_id, int(r.square_id), k, r.x_px, r.y_px, int(r.full))
                    for k, r in enumerate(table.itertuples())
                ],
            )
        (project.extraction_dir(atlas_id) / "labels.csv").unlink()
        full = table["square_id"][table["full"] == 1]
        pool += [(atlas_id, int(s), truth.loc[s]) for s in full if s in truth.index]
    chosen = rng.choice(len(pool), args.labels, replace=False)
    labels = [
        {
            "atlas_id": a,
            "square_id": s,
            "attribute": k,
            "value": round(t[k]),
            "labeler": "oracle",
        }
        for a, s, t in (pool[i] for i in chosen)
        for k in ("brightness", "squareness", "cracking", "contamination", "overall")
        if np.isfinite(t[k])
    ]
    project.put_labels(labels)
    params = {
        "epochs": args.epochs,
        "unlabeled": args.unlabeled,
        "seed": args.seed,
        "run_dir": "models/train-1",
        "parent": 1,
    }
    job = project.create_job("train", params)
    t0 = time.perf_counter()
    result = run_train(project, project.job(job["id"]), Reporter(project, job["id"]))
    wall = time.perf_counter() - t0
    print(
        f"fine-tuning: {args.labels} labels + {result['n_unlabeled']} unlabeled "
        f"({result['n_labeled']} trained, {result['n_test']} held out), {args.epochs} epochs: "
        f"{wall:.0f} s"
    )
    print(f"held-out mean |error| before: {result['error_before']}")
    print(f"held-out mean |error| after:  {result['error_after']}")


if __name__ == "__main__":
    main()
