"""``cryoscout train``: train the XCryoNet square-scoring model."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    data: list[Path] = typer.Argument(
        ..., metavar="FOLDER", help="Extraction folders (from `cryoscout extract`)."
    ),
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Run folder to write."),
    variant: str = typer.Option(
        "xcryonet", metavar="NAME", help="Model: xcryonet or primary (no attention)."
    ),
    labeled: int = typer.Option(
        -1,
        help="Labeled squares to train on (-1: all not held out).",
        show_default="all not held out",
    ),
    unlabeled: int = typer.Option(
        0, help="Unlabeled squares to add (0: fully supervised; -1: all the rest)."
    ),
    epochs: int = typer.Option(20, help="Training epochs."),
    size: int = typer.Option(128, help="Input size in pixels (multiple of 4)."),
    seed: int = typer.Option(0, help="Seed of the split, the initialisation and the shuffling."),
    batch_size: int = typer.Option(32, help="Squares per batch."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    width: int = typer.Option(16, help="Channels of the first convolution."),
    normalisation: str = typer.Option(
        "atlas", metavar="NAME", help="atlas (per extraction folder) or square."
    ),
    test_fraction: float = typer.Option(0.2, help="Fraction of labeled squares held out."),
    augment: bool = typer.Option(False, help="Randomise appearance (contrast, noise, blur...)."),
    accelerator: str = typer.Option("auto", metavar="NAME", help="cpu, gpu or auto (Lightning)."),
    devices: str = typer.Option("auto", metavar="N", help="Devices per node: a number or auto."),
    num_nodes: int = typer.Option(1, help="Nodes for multi-node DDP (e.g. under SLURM)."),
    precision: str = typer.Option(
        "32-true", metavar="NAME", help="Lightning precision, e.g. 16-mixed on GPU."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in OUT from OUT/checkpoints/last.ckpt (written after every "
        "epoch), up to --epochs.",
    ),
) -> None:
    """Train the XCryoNet square-scoring model on extracted squares.

    Labels come from each folder's labels.csv (square_id + any of brightness,
    squareness, cracking, contamination, overall; missing scores are not
    supervised). The run folder gets model.pt, config.yaml, metrics.csv and
    checkpoints/last.ckpt (after every epoch, for --resume); one line per epoch
    (losses, held-out error, elapsed time, ETA) goes to stderr. The same command
    runs on a CPU, a GPU, or several GPUs and nodes (Lightning DDP; under SLURM
    launch it with srun).

    Examples:

        $ cryoscout train ext1 ext2 -o runs/ss --variant xcryonet --labeled 100 --unlabeled 1500

        $ cryoscout train ext1 -o runs/fs --variant primary --epochs 5 --size 64

        $ srun cryoscout train ext* -o runs/big --accelerator gpu --devices 4 --num-nodes 2

        $ cryoscout train ext1 -o runs/ss --epochs 40 --resume
    """
    from cryoscout.errors import InputError

    for folder in data:  # before torch loads (seconds), so a typo fails at once
        if not folder.is_dir():
            raise InputError(folder, "no such extraction folder")
    from cryoscout.interrupt import Interrupted
    from cryoscout.progress import progress_enabled
    from cryoscout.runinfo import resume_command
    from cryoscout.screening.data import NORMALISATIONS
    from cryoscout.screening.model import VARIANTS
    from cryoscout.screening.module import EPOCH_METRICS, train_run
    from cryoscout.training import epoch_reporter, resume_checkpoint

    if variant not in VARIANTS:
        raise InputError("--variant", f"must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if normalisation not in NORMALISATIONS:
        raise InputError("--normalisation", f"must be one of {', '.join(NORMALISATIONS)}")
    if size < 8 or size % 4:
        raise InputError("--size", f"must be a multiple of 4 and at least 8, not {size}")
    if epochs < 1:
        raise InputError("--epochs", "must be at least 1")
    checkpoint = resume_checkpoint(out, resume)
    aug = None
    if augment:
        from cryoscout.screening.augment import randomise_appearance as aug
    try:
        record = train_run(
            data,
            out,
            variant=variant,
            n_labeled=labeled,
            n_unlabeled=unlabeled,
            epochs=epochs,
            size=size,
            seed=seed,
            batch_size=batch_size,
            lr=lr,
            width=width,
            normalisation=normalisation,
            test_fraction=test_fraction,
            accelerator=accelerator,
            devices=int(devices) if devices.isdigit() else devices,
            num_nodes=num_nodes,
            precision=precision,
            resume=checkpoint,
            augment=aug,
            progress=progress_enabled(),
            callbacks=[epoch_reporter(lambda line: typer.echo(line, err=True), EPOCH_METRICS)],
        )
    except Interrupted as exc:
        exc.resume = resume_command()
        raise
    typer.echo(
        f"trained {record['variant']} ({record['supervision']}: {record['n_labeled']} labeled, "
        f"{record['n_unlabeled']} unlabeled) -> {out / 'model.pt'}"
    )
    mad = record["test_mean_abs_diff"]
    if mad:
        typer.echo(
            f"held-out mean |error| ({record['n_test']} squares): "
            + ", ".join(f"{k} {v:.2f}" for k, v in mad.items())
        )
