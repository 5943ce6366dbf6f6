"""``cryoscout pick predict``: pick particles in one or many tomograms with a trained network."""

from __future__ import annotations

from pathlib import Path

import typer

_FORMATS = ("csv", "coords", "relion4", "relion5")


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _report(p) -> None:
    """One line per tomogram (a module-level function: spawned processes can pickle it)."""
    typer.echo(
        f"[{p.done}/{p.total} tomograms] {p.name}: {p.n_picks} picks in {p.seconds:.0f} s; "
        f"ETA {_minutes(p.eta_s)}",
        err=True,
    )


def predict(
    tomograms: list[str] = typer.Argument(
        ...,
        metavar="TOMOGRAM",
        help="Tomogram .mrc files, folders of them, quoted glob patterns ('tomos/*.mrc'), "
        "or a copick project's config.json (one tomogram per run).",
    ),
    model: Path = typer.Option(
        ..., "-m", "--model", help="Run folder of `cryoscout pick train`, or its model.pt."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    formats: str = typer.Option(
        "csv,relion5",
        "--format",
        help="Pick files per tomogram: csv, coords, relion4, relion5 (comma-separated).",
    ),
    threshold: str | None = typer.Option(
        None,
        "--threshold",
        metavar="T",
        help="MP-NMS: minimum pooled foreground fraction of a pick (0-1): 0.1, or per class "
        "1:0.05,2:0.7 (classes not named keep the model's threshold, else 0.1). Classes "
        "differ in how fully the network fills them, so one threshold each can pick better.",
        show_default="chosen per class on pick train's --val-tomogram, else 0.1",
    ),
    max_surround: float | None = typer.Option(
        None,
        "--max-surround",
        metavar="F",
        help="Drop picks inside a region of their class much larger than a particle: those "
        "whose class fills more than F of the shell at 1.2-1.8 particle radii around them "
        "(0.5 for tomograms unlike the training data; BENCHMARKS.md).",
        show_default="off",
    ),
    particle_radius: str | None = typer.Option(
        None,
        "--particle-radius",
        help="Particle radius in voxels for MP-NMS: 8, or per class 1:9,2:7 "
        "(default: recorded at training, else 1.7x the label radius).",
    ),
    tile: int | None = typer.Option(
        None, "--tile", help="Tile side in voxels (default: the training patch size)."
    ),
    margin: int | None = typer.Option(
        None, "--margin", help="Tile margin discarded, voxels (default: a sixth of the tile)."
    ),
    save_maps: bool = typer.Option(
        False,
        "--save-probabilities",
        help="Also write NAME_segmentation.mrc (class per voxel) and NAME_scores.mrc.",
    ),
    tomo_name: str | None = typer.Option(
        None,
        "--tomo-name",
        help="rlnTomoName, only with one tomogram (default: the file name without "
        "reconstruction prefixes/suffixes such as rec_, _rec, _bin4, _denoised; the folder "
        "name for tomogram.mrc). Must match RELION's tilt-series name.",
    ),
    ts_pixel: float | None = typer.Option(
        None,
        "--tilt-series-pixel-size",
        help="Unbinned tilt-series pixel size in Å, for relion4 (coordinates in its pixels).",
    ),
    binning: float | None = typer.Option(
        None, "--binning", help="Tomogram binning relative to the tilt series (for relion4)."
    ),
    copick_voxel_size: float | None = typer.Option(
        None, "--copick-voxel-size", help="copick: the voxel spacing (Å) to pick, if several."
    ),
    copick_tomo_type: str | None = typer.Option(
        None, "--copick-tomo-type", help="copick: the tomogram type (e.g. denoised), if several."
    ),
    copick_picks: str = typer.Option(
        "cryoscout/0",
        "--copick-picks",
        help="copick: store the picks in the project as USER_ID/SESSION_ID ('' to not store).",
    ),
    accelerator: str = typer.Option("auto", "--accelerator", help="cpu, gpu or auto."),
    devices: str = typer.Option(
        "auto", "--devices", help="Devices (GPUs) to spread tomograms over, or 'auto'."
    ),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Nodes (under SLURM: the job's)."),
    strategy: str = typer.Option(
        "auto", "--strategy", help="Lightning strategy, e.g. ddp (one process per GPU)."
    ),
) -> None:
    """Pick particles: segment each tomogram tile by tile, then find centres by MP-NMS.

    Each tomogram is read memory-mapped and segmented in overlapping tiles whose margins
    are discarded. Its picks are written as NAME_picks.csv (class names, scores), .coords
    and RELION 4 / RELION 5 STAR files, NAME being the tomogram's RELION name; with
    relion5, picks_relion5.star gathers all tomograms (rlnTomoName per tomogram). With
    several GPUs or nodes (--strategy ddp, or under SLURM) each process picks its share of
    the tomograms. A tomogram is done when NAME.done.json is written: rerunning the same
    command skips it, so an interrupted run resumes. A copick project's picks are also
    stored in the project (--copick-picks), so `pick evaluate --copick` scores them.

    Examples:

    \b
        $ cryoscout pick predict -m runs/picker tomo3/tomogram.mrc -o picks

    \b
        $ cryoscout pick predict -m runs/picker 'tomograms/rec_TS_*.mrc' -o picks \\
            --format relion5,relion4 --tilt-series-pixel-size 1.35

    \b
        $ cryoscout pick predict -m runs/picker tomograms/ -o picks \\
            --accelerator gpu --devices 4 --strategy ddp

    \b
        $ cryoscout pick predict -m runs/picker czii/config.json -o picks \\
            --copick-voxel-size 10 --copick-tomo-type denoised
    """
    from cryoscout.errors import InputError

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in _FORMATS]
    if bad or not fmts:
        raise InputError(
            "--format", f"unknown format {bad[0] if bad else formats!r}; use {', '.join(_FORMATS)}"
        )
    from cryoscout.cli.pick_train import parse_per_class

    thresholds = None
    if threshold is not None:
        thresholds = parse_per_class(
            threshold, "--threshold", lambda v: 0 <= v <= 1, "a number between 0 and 1"
        )
    if max_surround is not None and not 0 <= max_surround <= 1:
        raise InputError("--max-surround", "must lie between 0 and 1")
    try:
        n_devices: int | str = int(devices)
    except ValueError:
        n_devices = devices

    from cryoscout.picking import batch
    from cryoscout.picking.weights import load_model

    net, info = load_model(model)
    if isinstance(thresholds, dict):
        classes = range(1, net.num_classes + 1)
        unknown = sorted(set(thresholds) - set(classes))
        if unknown:
            raise InputError("--threshold", f"class {unknown[0]} is not one of the model's")
        # Classes not named keep what the model records (pick train --val-tomogram).
        recorded = batch.default_settings(net, info).threshold
        if not isinstance(recorded, dict):
            recorded = dict.fromkeys(classes, recorded)
        thresholds = {c: thresholds.get(c, recorded[c]) for c in classes}
    overrides = {"formats": fmts, "save_maps": save_maps}
    if thresholds is not None:
        overrides["threshold"] = thresholds
    overrides["max_surround"] = max_surround
    overrides |= {"tilt_series_pixel_size_A": ts_pixel, "binning": binning}
    overrides["copick_picks"] = copick_picks or None
    if particle_radius:
        from cryoscout.cli.pick_train import parse_radius

        given = parse_radius(particle_radius, "--particle-radius")
        classes = range(1, net.num_classes + 1)
        overrides["particle_radius"] = (
            given if isinstance(given, dict) else dict.fromkeys(classes, given)
        )
    settings = batch.default_settings(net, info, **overrides)
    if tile:
        settings.tile = tile
        settings.margin = max(tile // 6, 1)
    if margin is not None:
        settings.margin = margin
    if settings.tile <= 2 * settings.margin:
        raise InputError(
            "--tile",
            f"tile ({settings.tile}) must be larger than twice the margin ({settings.margin})",
        )

    try:
        res = batch.predict_many(
            model,
            tomograms,
            out,
            settings,
            tomo_name=tomo_name,
            copick_voxel_size_A=copick_voxel_size,
            copick_tomo_type=copick_tomo_type,
            accelerator=accelerator,
            devices=n_devices,
            num_nodes=num_nodes,
            strategy=strategy,
            on_progress=_report,
            run_config={"model": str(model), "inputs": list(tomograms)},
        )
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (a SLURM time limit)
        from cryoscout.runinfo import resume_command

        # Finished tomograms are kept; the same command picks the rest (no --resume flag).
        exc.resume = resume_command().removesuffix(" --resume")
        raise
    if res.rank != 0:  # one DDP process reports
        return
    typer.echo(
        f"{res.n_picks} picks in {res.total} tomograms ({res.picked} picked now, "
        f"{res.skipped} already done) in {out}"
    )
    if res.combined:
        typer.echo(f"wrote {res.combined}")
