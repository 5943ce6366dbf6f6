"""``cryoscout pick train``: train the DeepETPicker network on annotated tomograms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer


def parse_per_class(
    text: str,
    option: str,
    valid: Callable[[float], bool] = lambda v: v > 0,
    what: str = "a positive number",
) -> float | dict[int, float]:
    """``"5"`` -> 5.0; ``"1:5,2:8"`` -> ``{1: 5.0, 2: 8.0}``; InputError otherwise.

    ``valid`` says which values are allowed and ``what`` names them in the error.
    """
    from cryoscout.errors import InputError

    try:
        if ":" not in text:
            value = float(text)
            if not valid(value):
                raise ValueError
            return value
        out: dict[int, float] = {}
        for part in text.split(","):
            c, v = part.split(":")
            out[int(c)] = float(v)
            if not valid(out[int(c)]) or int(c) < 1:
                raise ValueError
        return out
    except ValueError:
        raise InputError(
            option, f"expected {what} or class:value pairs like 1:5,2:8, got {text!r}"
        ) from None


def parse_radius(text: str, option: str = "--radius") -> float | dict[int, float]:
    """``"5"`` -> 5.0; ``"1:5,2:8"`` -> ``{1: 5.0, 2: 8.0}``; InputError otherwise."""
    return parse_per_class(text, option)


#: Suffixes of tomograms; any other file is read as annotations (CSV, STAR or text).
TOMOGRAM_SUFFIXES = (".mrc", ".rec", ".map")


def pair_files(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split the positional files into tomograms and their annotations, in order.

    The i-th annotation file belongs to the i-th tomogram, so both
    ``t1.mrc t1.csv t2.mrc t2.csv`` and ``t1.mrc t2.mrc t1.csv t2.csv`` work.
    """
    from cryoscout.errors import InputError

    tomos = [f for f in files if f.suffix.lower() in TOMOGRAM_SUFFIXES]
    coords = [f for f in files if f.suffix.lower() not in TOMOGRAM_SUFFIXES]
    if not tomos or len(tomos) != len(coords):
        raise InputError(
            None,
            f"give one annotation file per tomogram ({len(tomos)} tomograms "
            f"({', '.join(TOMOGRAM_SUFFIXES)}), {len(coords)} annotation files)",
        )
    return tomos, coords


def epoch_line(history, epochs: int, names: list[str]) -> str:
    """One line about the last epoch of ``history``: loss, validation F1, elapsed, ETA."""
    from cryoscout.training import progress_line

    row = history.iloc[-1]
    figures = [f"loss {row['train_loss']:.4f}"]
    if "val_f1" in row and row["val_f1"] == row["val_f1"]:  # not NaN: validated this epoch
        per_class = [f"{n} {row[f'val_f1_{n}']:.2f}" for n in names if f"val_f1_{n}" in row]
        figures.append(
            f"val F1 {row['val_f1']:.3f}" + (f" ({', '.join(per_class)})" if per_class else "")
        )
    # elapsed_s counts from the start of the first run, so ETA is by all epochs so far.
    epoch = int(row["epoch"])
    return progress_line(epoch, epochs, figures, float(row["elapsed_s"]), epoch)


def _class_names(coords: list[Path], names: str | None, n: int) -> list[str]:
    """From --class-names, else a simulator's classes.csv beside the coordinates, else class<i>."""
    import pandas as pd

    from cryoscout.errors import InputError

    if names:
        out = [s.strip() for s in names.split(",")]
        if len(out) != n:
            raise InputError("--class-names", f"expected {n} names, got {len(out)}")
        return out
    table = coords[0].parent / "classes.csv"
    if table.is_file():
        try:
            df = pd.read_csv(table)
            found = dict(zip(df["class"].astype(int), df["name"].astype(str), strict=True))
            if all(c in found for c in range(1, n + 1)):
                return [found[c] for c in range(1, n + 1)]
        except (KeyError, ValueError, pd.errors.ParserError):
            pass
    return [f"class{c}" for c in range(1, n + 1)]


def check_lowpass_voxel(
    path: Path, voxel: float | None, first: float | None, lowpass: float, patch: int
) -> None:
    """InputError unless tomogram ``path`` has a voxel size that ``--lowpass`` can use.

    The sigma in voxels is one number recorded with the model, so all tomograms need the
    same voxel size (``first``, the first tomogram's), and the filter must be narrower
    than a quarter of the patch.
    """
    from cryoscout.errors import InputError

    if not voxel:
        raise InputError(path, "no voxel size in the header, which --lowpass (Å) needs")
    if first and abs(voxel - first) > 1e-3 * first:
        raise InputError(
            path,
            f"voxel size {voxel:g} Å differs from the first tomogram's {first:g} Å "
            "(--lowpass needs one)",
        )
    from cryoscout.picking.lowpass import check_width

    try:
        check_width(lowpass, voxel, patch)
    except ValueError as exc:
        raise InputError("--lowpass", str(exc)) from None


def train(
    files: list[Path] = typer.Argument(
        ...,
        metavar="TOMOGRAM ANNOTATIONS",
        help="Tomograms (.mrc, .rec, .map) and one annotation file each (CSV, text, STAR); "
        "the i-th annotation file belongs to the i-th tomogram.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "-o", "--out", metavar="DIR", help="Run folder to create.", show_default=False
    ),
    radius: str = typer.Option(
        ...,
        "--radius",
        metavar="R",
        help="TBall label radius r in voxels: 4, or per class 1:6,2:4.",
        show_default=False,
    ),
    class_names: str | None = typer.Option(
        None,
        "--class-names",
        metavar="NAMES",
        help="Names of classes 1..n, comma-separated.",
        show_default="from classes.csv beside the annotations, else class1, class2...",
    ),
    patch: int = typer.Option(72, "--patch", help="Patch side in voxels (48 or 32 on a CPU)."),
    epochs: int = typer.Option(50, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(4, "--batch-size", help="Patches per batch."),
    samples: int = typer.Option(64, "--samples-per-epoch", help="Random patches per epoch."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate (AdamW, one-cycle)."),
    loss: str = typer.Option(
        "dice",
        "--loss",
        metavar="NAME",
        help="dice (DeepETPicker) or dice+ce (adds cross-entropy; can collapse to background).",
    ),
    channels: str = typer.Option(
        "24,48,72,108",
        "--channels",
        metavar="C1,C2,...",
        help="Encoder channels per level (e.g. 8,16,24,32 on a CPU).",
    ),
    coord_mode: str = typer.Option(
        "patch",
        "--coord-channels",
        metavar="MODE",
        help="Coordinate channels across the 'patch' or the 'tomogram'.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of patch sampling, augmentation, weights."),
    accelerator: str = typer.Option(
        "auto", "--accelerator", metavar="NAME", help="cpu, gpu or auto."
    ),
    devices: str = typer.Option(
        "1", "--devices", metavar="N", help="Number of devices, or 'auto'."
    ),
    strategy: str = typer.Option(
        "auto", "--strategy", metavar="NAME", help="Lightning strategy, e.g. ddp."
    ),
    precision: str = typer.Option(
        "32-true", "--precision", metavar="NAME", help="e.g. 32-true, bf16-mixed."
    ),
    num_workers: int = typer.Option(0, "--num-workers", help="Data-loader workers."),
    val_tomogram: list[Path] | None = typer.Option(
        None,
        "--val-tomogram",
        metavar="FILE",
        help="Held-out tomogram for validation F1 and the per-class MP-NMS thresholds that "
        "pick predict uses; repeat for several (their counts pool: a few dozen particles "
        "per class choose a noisy threshold).",
        show_default="none: no validation",
    ),
    val_coords: list[Path] | None = typer.Option(
        None,
        "--val-coords",
        metavar="FILE",
        help="Its annotations (true centres); once per --val-tomogram, in order.",
    ),
    val_radius: str | None = typer.Option(
        None,
        "--val-radius",
        metavar="R",
        help="Particle radius in voxels: hit radius for validation F1 and the MP-NMS size "
        "recorded for pick predict.",
        show_default="the label radius",
    ),
    val_every: int = typer.Option(5, "--val-every", help="Epochs between validations."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the interrupted run in OUT from OUT/checkpoints/last.ckpt "
        "(give the same options).",
    ),
    negatives: list[Path] | None = typer.Option(
        None,
        "--negatives",
        metavar="FILE",
        help="Points known not to be particles (gold, membranes, other proteins) in the "
        "i-th tomogram, read like its annotations (CSV, text, STAR; a simulator's "
        "distractors.csv); give the option once per tomogram, in order.",
        show_default="none",
    ),
    negative_fraction: float = typer.Option(
        0.25,
        "--negative-fraction",
        metavar="F",
        help="Share of patches centred on a negative (learned negatives; with --negatives).",
    ),
    # Appearance randomisation (picking.data.Appearance); off by default, see BENCHMARKS.md.
    randomize_appearance: bool = typer.Option(
        False,
        "--randomize-appearance/--no-randomize-appearance",
        help="Randomise contrast, blur and noise colour of patches (for other microscopes).",
    ),
    lowpass: float = typer.Option(
        0.0,
        "--lowpass",
        metavar="A",
        help="Gaussian low-pass of the input, sigma in Å (converted with the tomograms' "
        "voxel size), at training and, recorded with the model, at pick predict. Measured "
        "(BENCHMARKS.md, domain shift): --lowpass 30 at 20 Å/voxel took F1 (4v94/4cr2) on "
        "tomograms with noise rising with frequency from 0.27/0.29 to 0.75/0.49 (model "
        "trained on them) and 0.37/0.20 to 0.68/0.35 (trained on a mixture of other "
        "settings), at the same budget. 0: off.",
    ),
) -> None:
    """Train the 3D residual U-Net on tomograms with annotated particle centres.

    Each annotated centre becomes a TBall-M label of radius r (a ball of radius
    sqrt(2)·r truncated to the (2r+1)³ cube); the network learns to segment those
    balls with a soft Dice loss. One line per epoch (loss, validation F1, elapsed
    time, ETA) goes to stderr. The run folder gets model.pt, metrics.csv,
    config.yaml and checkpoints/last.ckpt (after every epoch, for --resume). The
    same command trains on a CPU, a GPU or several GPUs (DDP).

    Examples:

        $ cryoscout pick train sim1/tomogram.mrc sim1/particles.csv \\
            sim2/tomogram.mrc sim2/particles.csv -o run1 --radius 4 --patch 32 \\
            --channels 8,16,24,32 --epochs 20

        $ cryoscout pick train t1.mrc t2.mrc t1.star t2.star -o run2 --radius 1:6,2:4 \\
            --val-tomogram t3.mrc --val-coords t3.star --accelerator gpu --devices 4 \\
            --strategy ddp

        $ cryoscout pick train t1.mrc t1.star -o run3 --radius 4 --epochs 40 --resume

        $ cryoscout pick train sim1/tomogram.mrc sim1/particles.csv -o run4 --radius 4 \\
            --negatives sim1/distractors.csv --negative-fraction 0.25

        $ cryoscout pick train sim1/tomogram.mrc sim1/particles.csv -o run5 --radius 4 \\
            --lowpass 30
    """
    import math

    from cryoscout.errors import InputError

    tomo_paths, coord_paths = pair_files(files)
    label_radius = parse_radius(radius)
    if loss not in ("dice", "dice+ce"):
        raise InputError("--loss", f"expected dice or dice+ce, got {loss!r}")
    try:
        chans = tuple(int(c) for c in channels.split(","))
        if not chans or min(chans) < 1:
            raise ValueError
    except ValueError:
        raise InputError(
            "--channels", f"expected positive integers like 8,16,24,32, not {channels!r}"
        ) from None
    if coord_mode not in ("patch", "tomogram"):
        raise InputError("--coord-channels", "must be 'patch' or 'tomogram'")
    if patch < 2 ** len(chans):
        raise InputError("--patch", f"at least {2 ** len(chans)} voxels for {len(chans)} levels")
    if epochs < 1 or batch_size < 1 or samples < 1:
        raise InputError("--epochs", "epochs, batch size and samples per epoch must be positive")
    negatives = list(negatives or [])
    if negatives and len(negatives) != len(tomo_paths):
        raise InputError(
            "--negatives",
            f"give one file per tomogram, in order ({len(tomo_paths)} tomograms, "
            f"{len(negatives)} negatives files)",
        )
    if not 0 < negative_fraction <= 0.75:
        raise InputError("--negative-fraction", "must lie in (0, 0.75] (a quarter are random)")
    if not (lowpass >= 0 and math.isfinite(lowpass)):
        raise InputError("--lowpass", f"must be a sigma of 0 Å (off) or more, not {lowpass}")
    val_tomogram, val_coords = list(val_tomogram or []), list(val_coords or [])
    if len(val_tomogram) != len(val_coords):
        raise InputError(
            "--val-tomogram",
            f"give one --val-coords per --val-tomogram, in order ({len(val_tomogram)} "
            f"tomograms, {len(val_coords)} coordinate files)",
        )
    for path in [*tomo_paths, *coord_paths, *negatives, *val_tomogram, *val_coords]:
        if not path.is_file():
            raise InputError(path, "no such file")
    from cryoscout.training import resume_checkpoint

    checkpoint = resume_checkpoint(out, resume)

    import pandas as pd

    from cryoscout.interrupt import Interrupted
    from cryoscout.io.coords import check_classes, read_coords
    from cryoscout.io.mrc import read_mrc
    from cryoscout.io.runfolder import resumable_run_folder
    from cryoscout.picking.module import TrainConfig
    from cryoscout.picking.train import train_picker
    from cryoscout.progress import progress_enabled
    from cryoscout.runinfo import resume_command

    # Checked and locked before the work; INCOMPLETE until the end; checkpoints stay.
    with resumable_run_folder(out, resume=checkpoint is not None):
        known = sorted(label_radius) if isinstance(label_radius, dict) else None
        volumes, tables, negative_tables, voxel_size = [], [], [], None
        for i, (tpath, cpath) in enumerate(zip(tomo_paths, coord_paths, strict=True)):
            vol, vs = read_mrc(tpath, mmap=True)
            if vol.ndim != 3:
                raise InputError(
                    tpath, f"expected a 3D tomogram, got an array of shape {vol.shape}"
                )
            tables.append(read_coords(cpath, voxel_size_A=vs, shape=vol.shape, classes=known))
            if negatives:  # any class: negatives are all one kind, "not a particle"
                negative_tables.append(read_coords(negatives[i], voxel_size_A=vs, shape=vol.shape))
            volumes.append(vol)
            if lowpass:
                check_lowpass_voxel(tpath, vs, voxel_size, lowpass, patch)
            voxel_size = voxel_size or vs
        declared = len(class_names.split(",")) if class_names else (max(known) if known else None)
        num_classes = check_classes(tables, coord_paths, declared)
        classes = range(1, num_classes + 1)
        radius_map = (
            dict(label_radius)
            if isinstance(label_radius, dict)
            else dict.fromkeys(classes, float(label_radius))
        )
        names = _class_names(coord_paths, class_names, num_classes)
        # The particle radius sizes MP-NMS in `pick predict`; recorded with the weights when given.
        particle = None
        if val_radius:
            pr = parse_radius(val_radius, "--val-radius")
            particle = pr if isinstance(pr, dict) else dict.fromkeys(classes, pr)
        counts = pd.concat(tables)["class"].value_counts()
        typer.echo(
            f"training on {sum(len(t) for t in tables)} particles ("
            + ", ".join(f"{names[c - 1]}: {int(counts.get(c, 0))}" for c in classes)
            + f") in {len(tomo_paths)} tomogram(s)",
            err=True,
        )
        validation = []
        for vpath, cpath in zip(val_tomogram, val_coords, strict=True):
            vvol, vvs = read_mrc(vpath, mmap=True)
            vtruth = read_coords(cpath, voxel_size_A=vvs, shape=vvol.shape, classes=classes)
            validation.append((vvol, vtruth))

        config = TrainConfig(
            channels=chans,
            coord_mode=coord_mode,
            patch_size=patch,
            epochs=epochs,
            batch_size=batch_size,
            samples_per_epoch=samples,
            lr=lr,
            seed=seed,
            accelerator=accelerator,
            devices=int(devices) if devices.isdigit() else devices,
            strategy=strategy,
            precision=precision,
            num_workers=num_workers,
            val_every=val_every,
            loss=loss,
            distractor_fraction=negative_fraction if negatives else 0.0,
        )
        if randomize_appearance:
            from cryoscout.picking.data import Appearance

            config.augmentation.appearance = Appearance()
        try:
            result = train_picker(
                volumes,
                tables,
                names,
                radius_map,
                config,
                out,
                particle_radius=particle,
                voxel_size_A=voxel_size,
                validation=validation,
                on_epoch=lambda history: typer.echo(epoch_line(history, epochs, names), err=True),
                resume=checkpoint,
                inputs={
                    "tomograms": [str(p) for p in tomo_paths],
                    "coords": [str(p) for p in coord_paths],
                    "val_tomograms": [str(p) for p in val_tomogram],
                    "val_coords": [str(p) for p in val_coords],
                    "negatives": [str(p) for p in negatives],
                },
                progress=progress_enabled(),
                negatives=negative_tables or None,
                lowpass_A=lowpass,
            )
        except Interrupted as exc:
            exc.resume = resume_command()
            raise
        typer.echo(f"model: {result.model_path} (classes {', '.join(names)})")
        typer.echo(f"metrics: {out / 'metrics.csv'}")
