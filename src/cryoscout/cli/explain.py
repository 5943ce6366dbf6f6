"""``cryoscout explain``: attention overlays that show why a square scored as it did."""

from __future__ import annotations

from pathlib import Path

import typer


def explain(
    folder: Path = typer.Argument(
        ...,
        metavar="FOLDER",
        help="Output folder of `cryoscout extract` or of `cryoscout screen`.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "-o", "--out", metavar="DIR", help="Folder for the PNGs and scores.csv."
    ),
    model: str | None = typer.Option(
        None,
        "-m",
        "--model",
        metavar="MODEL",
        help="'default' (the shipped XCryoNet), or a run folder from `cryoscout train` "
        "or its model.pt. The shipped 'baseline' has no attention maps to draw.",
        show_default="default",
    ),
    squares: str | None = typer.Option(
        None, "--squares", metavar="IDS", help="Square IDs to explain, e.g. 1,5,9."
    ),
    top_k: int | None = typer.Option(
        None,
        "--top-k",
        "-k",
        metavar="K",
        help="Explain the K best squares by overall score.",
        show_default="every square",
    ),
) -> None:
    """Draw each square's cracking and contamination attention over the square.

    One PNG per square (image | cracking overlay | contamination overlay, the
    predicted scores in the title) and scores.csv with every square's scores.
    Without --squares or --top-k every square is drawn.

    Examples:

        $ cryoscout explain squares -o explain --top-k 10

        $ cryoscout explain screen_out -o explain --squares 1,5,9 -m runs/ss
    """
    from cryoscout.errors import InputError
    from cryoscout.models import check_model_option

    wanted = None
    if squares:
        try:
            wanted = [int(s) for s in squares.split(",") if s.strip()]
        except ValueError:
            raise InputError("--squares", f"expected IDs like 1,5,9, not {squares!r}") from None
    if top_k is not None and top_k < 1:
        raise InputError("--top-k", "must be at least 1")
    # Checked before torch loads (seconds), so a typo fails at once.
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    check_model_option(model)
    from cryoscout.screening.explain import explain_extraction

    written = explain_extraction(folder, out, model_dir=model, squares=wanted, top=top_k)
    typer.echo(f"{len(written)} overlays and scores.csv -> {out}")
