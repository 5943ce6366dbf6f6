"""``cryoscout screen``: the main job, from atlas to ranked squares and targets."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoscout.cli.help import FLAT_FIELD_HELP


def screen(
    input_path: Path | None = typer.Argument(
        None,
        metavar="INPUT",
        help="EPU Atlas.dm (or its folder), SerialEM montage .mrc/.mdoc, or a stitched "
        ".mrc/.tif/.png/.jpg. Leave out with --example.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", metavar="DIR", help="Output folder.", show_default=False
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        metavar="MODEL",
        help="A shipped model: 'default' (XCryoNet + tree head) or 'baseline' "
        "(gradient-boosted trees on hand-made features, no attention maps); or a run "
        "folder from 'cryoscout train' or its model.pt (a folder named like a shipped "
        "model: ./NAME). Default: 'default'.",
        show_default=False,
    ),
    top_k: int = typer.Option(
        20, "--top-k", "-k", min=0, metavar="K", help="Number of target squares."
    ),
    pixel_size: float | None = typer.Option(
        None,
        "--pixel-size",
        help="Atlas pixel size in Å, overriding the file's header.",
        show_default=False,
    ),
    size: int | None = typer.Option(
        None,
        "--size",
        min=16,
        help="Square size in pixels. Default: the model's input size.",
        show_default=False,
    ),
    flat_field: bool = typer.Option(
        True,
        "--flat-field/--no-flat-field",
        help=FLAT_FIELD_HELP,
    ),
    example: bool = typer.Option(
        False,
        "--example",
        help="Simulate a built-in example atlas (EPU format, fixed seed) into "
        "OUT/example_atlas and screen it.",
    ),
) -> None:
    """Score and rank the grid squares of an atlas; write a report and SerialEM targets.

    Extracts every grid square, scores it with the model of -m (default: the
    shipped XCryoNet; brightness, squareness, cracking, contamination, overall on
    a 0-4 scale), ranks squares
    by overall score and writes into OUT: scores.csv, report.html (open it in a
    browser), targets.csv, targets.nav (SerialEM navigator, when the input has
    stage positions), squares.mrcs, overview.png and config.yaml.

    Examples:

        $ cryoscout screen --example -o screen_example

        $ cryoscout screen /data/grid3/Atlas.dm -o grid3_screen --top-k 30

        $ cryoscout screen LMM.mrc -o lmm_screen --model runs/xcryonet_ss

        $ cryoscout screen /data/grid3/Atlas.dm -o grid3_baseline -m baseline
    """
    from cryoscout.errors import InputError
    from cryoscout.models import check_model_option
    from cryoscout.screening.screen import screen as run_screen

    if pixel_size is not None and pixel_size <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--pixel-size")
    if example and input_path is not None:
        raise InputError("--example", "give either INPUT or --example, not both")
    if not example and input_path is None:
        raise InputError(None, "no INPUT given (or use --example for a built-in example atlas)")
    # Cheap checks first: torch and the model take seconds to load.
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    check_model_option(model)
    if not example:
        from cryoscout.io.atlas_reader import open_atlas

        open_atlas(input_path, pixel_size_A=pixel_size)  # metadata only: format and files
    # With --example, input_path stays None: screen simulates it into OUT/example_atlas.
    try:
        result = run_screen(
            input_path,
            out,
            model_dir=model,
            top_k=top_k,
            size=size,
            pixel_size_A=pixel_size,
            flat_field=flat_field,
        )
    except InputError as exc:
        if exc.path is None:  # an algorithm's complaint about the image: name the input
            raise InputError(input_path or "--example", exc.problem) from None
        raise
    n_full = int(result.scores["full"].sum()) if "full" in result.scores else len(result.scores)
    typer.echo(
        f"screened {len(result.scores)} squares ({n_full} full); "
        f"{len(result.targets)} targets in {result.files['targets_csv']}"
        + (f" and {result.files['targets_nav']}" if "targets_nav" in result.files else "")
    )
    typer.echo(f"report: {result.report}")
