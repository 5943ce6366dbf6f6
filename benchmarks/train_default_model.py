"""Train the default model shipped in ``cryoscout/models/`` (reproducible recipe).

XCryoNet, semi-supervised, 128 px, appearance randomisation on, seed fixed,
trained on simulated atlases built by ``benchmarks/make_screening_data.py``.
The weights go to ``src/cryoscout/models/default_xcryonet.pt`` and a
human-readable summary to ``default_xcryonet.json`` beside them.

Recipe (2 CPU cores, shared)::

    $ python benchmarks/make_screening_data.py -o /tmp/h4/data --atlases 8 --seed 0 --size 128
    $ python benchmarks/train_default_model.py /tmp/h4/data/atlas0* --run /tmp/h4/default_run \\
        --labeled 1000 --unlabeled 1000 --epochs 3 --seed 0 --threads 1
    $ python benchmarks/train_default_model.py /tmp/h4/data/atlas0* --run /tmp/h4/default_run \
        --labeled 1000 --unlabeled 1000 --epochs 6 --seed 0 --threads 1 \
        --resume /tmp/h4/default_run/checkpoints/last.ckpt

(the second command continues the first to 6 epochs; the split and data order
are the same because they derive from the seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cryoscout.io.atomic import write_text
from cryoscout.screening.augment import randomise_appearance
from cryoscout.screening.module import train_run
from cryoscout.screening.predict import load_model, save_model

MODELS = Path(__file__).resolve().parents[1] / "src" / "cryoscout" / "models"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path, help="Extraction folders with labels.csv.")
    p.add_argument("--run", type=Path, required=True, help="Run folder for the training.")
    p.add_argument("--labeled", type=int, default=1200)
    p.add_argument("--unlabeled", type=int, default=1200)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default).")
    p.add_argument("--resume", type=Path, help="Continue from RUN/checkpoints/last.ckpt.")
    p.add_argument("--no-install", action="store_true", help="Do not copy into the package.")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    record = train_run(
        args.data,
        args.run,
        variant="xcryonet",
        n_labeled=args.labeled,
        n_unlabeled=args.unlabeled,
        epochs=args.epochs,
        size=args.size,
        seed=args.seed,
        augment=randomise_appearance,
        test_fraction=0.1,
        accelerator="cpu",
        devices=1,
        resume=args.resume,
    )
    seconds = time.perf_counter() - start
    record["train_seconds"] = round(seconds, 1)
    record["train_squares_per_s"] = round(
        (record["n_labeled"] + record["n_unlabeled"]) * args.epochs / seconds, 2
    )
    print(json.dumps(record, indent=1), flush=True)
    if args.no_install:
        return
    model = load_model(args.run)
    recipe = (
        "python benchmarks/train_default_model.py "
        + " ".join(str(d) for d in args.data)
        + f" --run {args.run} --labeled {args.labeled} --unlabeled {args.unlabeled}"
        + f" --epochs {args.epochs} --size {args.size} --seed {args.seed}"
        + (f" (resumed from {args.resume})" if args.resume else "")
    )
    save_model(
        MODELS / "default_xcryonet.pt",
        model.net,
        model.meta["normalisation"],
        training=record,
        recipe=recipe,
    )
    write_text(
        MODELS / "default_xcryonet.json",
        json.dumps({**model.meta, "training": record, "recipe": recipe}, indent=1) + "\n",
    )
    print(f"installed {MODELS / 'default_xcryonet.pt'}")


if __name__ == "__main__":
    main()
