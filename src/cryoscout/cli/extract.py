"""`cryoscout extract`: grid squares of an atlas as a table, a stack and an overview."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoscout.cli.help import FLAT_FIELD_HELP


def extract(
    input: Path = typer.Argument(
        ..., help="EPU Atlas.dm (or its folder), SerialEM .mdoc/.mrc, or a .mrc/.tif/.png/.jpg."
    ),
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Output folder."),
    size: int = typer.Option(128, "--size", help="Side of each extracted square in pixels."),
    fov: float = typer.Option(
        1.0, "--fov", help="Field of view of each square in lattice pitches."
    ),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="Atlas pixel size in Å; overrides the metadata.", min=0.0
    ),
    flat_field: bool = typer.Option(
        True,
        "--flat-field/--no-flat-field",
        help=FLAT_FIELD_HELP,
    ),
) -> None:
    """Find every grid square of an atlas, crop it, and label brightness and squareness.

    Writes squares.csv (centres in montage pixels and stage µm, full/partial,
    NCC, automatic brightness and squareness on 0-4), squares.mrcs (one upright
    square per section), overview.png, config.yaml, and labels.csv when the
    input comes from `cryoscout simulate atlas` (its truth.csv).

    Examples:

      $ cryoscout simulate atlas sim --seed 1 && cryoscout extract sim/atlas.mrc -o squares

      $ cryoscout extract Sample4/Atlas/Atlas.dm -o sample4 --size 256

      $ cryoscout extract atlas.png -o out --pixel-size 5000
    """
    import logging

    import pandas as pd

    from cryoscout.atlas.extract import extract_squares
    from cryoscout.atlas.stitch import stitch
    from cryoscout.errors import InputError, stage
    from cryoscout.io.atlas_reader import open_atlas
    from cryoscout.io.runfolder import run_folder
    from cryoscout.io.squares import find_truth, write_extraction
    from cryoscout.report.overview import render_overview
    from cryoscout.runinfo import write_run_config

    log = logging.getLogger("cryoscout.extract")
    with run_folder(out) as folder:  # checked and locked before the work; whole or absent
        source = open_atlas(input, pixel_size_A=pixel_size)
        with stage("stitching", input):
            montage = stitch(source, flat_field=flat_field)
        try:
            with stage("extracting squares", input):
                extraction = extract_squares(montage, size=size, fov=fov)
        except InputError as exc:
            if exc.path is None:  # an algorithm's complaint about the image: name the input
                raise InputError(input, exc.problem) from None
            raise
        truth_path = find_truth(input)
        truth = None
        if truth_path is not None:
            log.info("labels from %s", truth_path)
            try:
                truth = pd.read_csv(truth_path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise InputError(truth_path, f"not a readable CSV ({exc})") from None
        files = write_extraction(
            folder, extraction, known_squares=source.known_squares, truth=truth
        )
        lat = extraction.lattice
        render_overview(
            montage.image,
            extraction.table,
            folder / "overview.png",
            pitch_px=lat.pitch_px,
            angle_deg=lat.angle_deg,
            side_px=lat.square_side_px,
        )
        write_run_config(
            folder,
            {
                "input": input.resolve(),
                "format": source.format,
                "size": size,
                "fov": fov,
                "pixel_size_A": montage.pixel_size_A,
                "flat_field": flat_field,
                "square_pixel_size_A": extraction.pixel_size_A,
                "lattice": {
                    "pitch_px": lat.pitch_px,
                    "angle_deg": lat.angle_deg,
                    "bar_width_px": lat.bar_width_px,
                },
                "intensity_reference": extraction.intensity_reference,
                "truth": truth_path,
            },
        )
    n = len(extraction.table)
    n_full = int(extraction.table["full"].sum())
    typer.echo(f"{n} squares ({n_full} full, {n - n_full} partial) from {input}")
    typer.echo(f"wrote {out}/: squares.csv, squares.mrcs, overview.png, config.yaml", nl=False)
    typer.echo(", labels.csv" if "labels" in files else "")
