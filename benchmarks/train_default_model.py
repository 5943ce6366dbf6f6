"""Train the default model shipped in ``cryoscout/models/`` (reproducible recipe).

XCryoNet, 128 px, width 16, atlas normalisation, appearance randomisation on,
seed fixed, trained on simulated atlases built by
``benchmarks/make_screening_data.py``. The shipped model uses every label it
has (fully supervised on all labeled squares by default; semi-supervision is
for the Table 1 benchmark, where labels are scarce on purpose), a cosine
learning-rate decay, and may start from an earlier model's weights
(``--init``) so that CPU time adds up across runs. The weights go to
``src/cryoscout/models/default_xcryonet.pt`` and a human-readable summary to
``default_xcryonet.json`` beside them.

Recipe of the shipped model (2 CPU cores, shared)::

    # stage 1 (the first default model): 8 atlases, SS, 6 epochs
    $ python benchmarks/make_screening_data.py -o /tmp/h4/data --atlases 8 --seed 0 --size 128
    $ python benchmarks/train_default_model.py /tmp/h4/data/atlas0* --run /tmp/h4/default_run \\
        --labeled 1000 --unlabeled 1000 --epochs 6 --seed 0 --threads 1 --lr-end 1
    # stage 2: 6 more atlases with cracks 2.5x as common, all labels, from stage 1
    $ python benchmarks/make_screening_data.py -o /tmp/h10/train --atlases 6 --seed 1 \\
        --crack-scale 2.5
    $ python benchmarks/train_default_model.py /tmp/h4/data/atlas0* /tmp/h10/train/atlas0* \\
        --run /tmp/h10/run --init /tmp/h4/default_run/model.pt --epochs 2 --max-minutes 26 \\
        --seed 1 --threads 1

    # stage 3 (the network of today's default, issue 12): every holey-film type, wider pixel
    # sizes, ice and dose (the network had only seen R1.2/1.3 film and read R2/2's resolved hole
    # lattice as cracks), from stage 2 (STAGE2.pt: git show 6388c04:src/cryoscout/models/
    # default_xcryonet.pt), with every earlier atlas so that nothing is forgotten
    $ python benchmarks/make_screening_data.py -o /tmp/s13/train_w --atlases 8 --seed 7 --wide
    $ python benchmarks/make_screening_data.py -o /tmp/s13/train_wc --atlases 4 --seed 8 --wide \
        --crack-scale 2.5
    $ python benchmarks/train_default_model.py /tmp/h4/data/atlas0* /tmp/h10/train/atlas0* \
        /tmp/s13/train_w/atlas0* /tmp/s13/train_wc/atlas0* --run /tmp/s13/net_w_run \
        --init STAGE2.pt --epochs 2 --max-minutes 45 --lr 5e-4 --seed 2 --threads 2 --no-install

    # stage 4 (the network of today's default, issue 12 round 4): low-dose atlases (45-90
    # counts per pixel, where shot noise read as cracks) and more wide ones, from stage 3, in
    # two runs (the second with a lower rate and 6 more low-dose atlases)
    $ python benchmarks/make_screening_data.py -o /tmp/s14/train_ld --atlases 6 --seed 20 \
        --wide --dose 45 90
    $ python benchmarks/make_screening_data.py -o /tmp/s14/train_w3 --atlases 4 --seed 21 --wide
    $ python benchmarks/make_screening_data.py -o /tmp/s14/train_ld2 --atlases 6 --seed 25 \
        --wide --dose 45 90
    $ python benchmarks/train_default_model.py STAGE1_2_3_DATA /tmp/s14/train_ld/atlas0* \
        /tmp/s14/train_w3/atlas0* --run /tmp/s14/net_run --init /tmp/s13/net_w_run/model.pt \
        --epochs 2 --max-minutes 40 --lr 4e-4 --seed 3 --threads 2 --no-install
    $ python benchmarks/train_default_model.py STAGE1_2_3_DATA /tmp/s14/train_ld/atlas0* \
        /tmp/s14/train_w3/atlas0* /tmp/s14/train_ld2/atlas0* --run /tmp/s14/net_run2 \
        --init /tmp/s14/net_run/model.pt --epochs 1 --max-minutes 30 --lr 2e-4 --seed 4 \
        --threads 2 --no-install

(stage 1 ran as 3 epochs, then resumed to 6 with Lightning's checkpoint; see
``benchmarks/results/screening.md``; stage 3 stopped at its 45-minute limit after 13,100
squares, about 0.65 epoch, at 4.8 squares/s on cores shared with other jobs; its atlases
/tmp/h4/data and /tmp/h10/train are /tmp/s12/train_a and train_b of
``benchmarks/results/screening_quality.md``; STAGE1_2_3_DATA is stage 3's four folders;
stage 4's runs took 52,300 squares (1.8 epochs of 28,740 labels) at 21 squares/s, then
25,400 (0.76 epoch of 33,408) at 14 squares/s while benchmarks shared the cores). The tree
head and calibration of the shipped default are then fitted by
``benchmarks/fit_tree_head.py`` (recipe there). Evaluate with
``benchmarks/evaluate_default_model.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from cryoscout.io.atomic import write_text
from cryoscout.screening.augment import randomise_appearance
from cryoscout.screening.module import XCryoNetModule, evaluate
from cryoscout.screening.predict import load_model, save_model

MODELS = Path(__file__).resolve().parents[1] / "src" / "cryoscout" / "models"


class CosineModule(XCryoNetModule):
    """XCryoNet's three-step module with a per-batch cosine learning-rate decay.

    Manual optimisation ignores Lightning's schedulers, so the rate of every
    optimiser is set before each batch: ``lr`` decaying to ``lr * lr_end`` over
    ``total_steps`` batches or ``max_seconds`` of training, whichever comes first
    (so that a run stopped by its time limit still ends at a low rate).
    """

    def __init__(
        self, *args, total_steps: int = 1, lr_end: float = 0.05, max_seconds: float = 0, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.total_steps = max(1, total_steps)
        self.lr_end = lr_end
        self.max_seconds = max_seconds
        self.batches = 0
        self.started = time.perf_counter()

    def current_lr(self) -> float:
        t = self.batches / self.total_steps
        if self.max_seconds:
            t = max(t, (time.perf_counter() - self.started) / self.max_seconds)
        t = min(1.0, t)
        return self.lr * (self.lr_end + (1 - self.lr_end) * 0.5 * (1 + math.cos(math.pi * t)))

    def training_step(self, batch, batch_idx: int) -> None:
        opts = self.optimizers()
        lr = self.current_lr()
        for opt in opts if isinstance(opts, list) else [opts]:
            for group in opt.optimizer.param_groups:
                group["lr"] = lr
        super().training_step(batch, batch_idx)
        self.batches += 1
        if self.batches % 50 == 0:
            rate = self.batches * batch[0].shape[0] / (time.perf_counter() - self.started)
            print(
                f"batch {self.batches}/{self.total_steps} lr {lr:.2e} {rate:.1f} sq/s", flush=True
            )


def main() -> None:
    from pytorch_lightning import Trainer, seed_everything
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from cryoscout.screening.data import load_screening_data, make_split, training_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path, help="Extraction folders with labels.csv.")
    p.add_argument("--run", type=Path, required=True, help="Run folder for the training.")
    p.add_argument("--labeled", type=int, default=-1, help="-1: every labeled square.")
    p.add_argument("--unlabeled", type=int, default=0, help="0: fully supervised.")
    p.add_argument("--test-fraction", type=float, default=0.0, help="Labeled squares held out.")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=0, help="Stop after this (0: no limit).")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-end", type=float, default=0.05, help="Final lr / lr (1: constant).")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--init", type=Path, help="Start from this model's weights (model.pt).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default).")
    p.add_argument("--no-install", action="store_true", help="Do not copy into the package.")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = load_screening_data(args.data, size=args.size, normalisation="atlas")
    big = len(data)
    split = make_split(
        data,
        n_labeled=big if args.labeled < 0 else args.labeled,
        n_unlabeled=big if args.unlabeled < 0 else args.unlabeled,
        seed=args.seed,
        test_fraction=args.test_fraction,
    )
    semi = len(split.unlabeled) > 0
    train_set = training_dataset(data, split, semi, augment=randomise_appearance, seed=args.seed)
    steps = args.epochs * math.ceil(len(train_set) / args.batch_size)
    seed_everything(args.seed, workers=True, verbose=False)
    module = CosineModule(
        "xcryonet", size=args.size, width=args.width, lr=args.lr,
        total_steps=steps, lr_end=args.lr_end, max_seconds=60 * args.max_minutes,
    )  # fmt: skip
    if args.init:
        init = load_model(args.init)
        if (init.size, int(init.meta["width"])) != (args.size, args.width):
            raise SystemExit(f"--init {args.init}: size/width differ from --size/--width")
        module.net.load_state_dict(init.net.state_dict())
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    trainer = Trainer(
        max_epochs=args.epochs,
        max_time={"minutes": args.max_minutes} if args.max_minutes else None,
        accelerator="cpu",
        devices=1,
        default_root_dir=args.run,
        logger=CSVLogger(save_dir=args.run, name="", version=""),
        callbacks=[ModelCheckpoint(dirpath=args.run / "checkpoints", save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    net = module.net.cpu().eval()
    record = {
        "variant": "xcryonet",
        "supervision": "SS" if semi else "FS",
        "size": args.size,
        "width": args.width,
        "normalisation": "atlas",
        "epochs_planned": args.epochs,
        "batches_done": module.batches,
        "epochs_done": round(
            module.batches / max(1, math.ceil(len(train_set) / args.batch_size)), 2
        ),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_end": args.lr_end,
        "seed": args.seed,
        "augment": True,
        "init": str(args.init) if args.init else None,
        "data": [str(f) for f in args.data],
        "n_labeled": len(split.labeled),
        "n_unlabeled": len(split.unlabeled),
        "n_test": len(split.test),
        "train_seconds": round(seconds, 1),
        "train_squares_per_s": round(module.batches * args.batch_size / seconds, 2),
    }
    if len(split.test):
        test = evaluate(net, data.images[split.test], data.labels[split.test])
        record["test_mean_abs_diff"] = {k: round(float(v), 3) for k, v in test.items()}
    print(json.dumps(record, indent=1), flush=True)
    recipe = (
        "python benchmarks/train_default_model.py "
        + " ".join(str(d) for d in args.data)
        + f" --run {args.run} --labeled {args.labeled} --unlabeled {args.unlabeled}"
        + f" --epochs {args.epochs} --max-minutes {args.max_minutes} --lr {args.lr}"
        + f" --lr-end {args.lr_end} --size {args.size} --seed {args.seed}"
        + (f" --init {args.init}" if args.init else "")
    )
    save_model(args.run / "model.pt", net, "atlas", training=record, recipe=recipe)
    if args.no_install:
        return
    meta = load_model(args.run).meta
    save_model(MODELS / "default_xcryonet.pt", net, "atlas", training=record, recipe=recipe)
    write_text(MODELS / "default_xcryonet.json", json.dumps(meta, indent=1, default=str) + "\n")
    print(f"installed {MODELS / 'default_xcryonet.pt'}")


if __name__ == "__main__":
    main()
