"""``cryoscout explain``: attention overlays that show why a square scored as it did."""

from __future__ import annotations

from pathlib import Path

import typer


def explain(
    extraction: Path = typer.Argument(..., help="Extraction folder (from `cryoscout extract`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the PNGs and scores.csv."),
    model: Path | None = typer.Option(
        None, "--model", help="Run folder or model.pt (default: the shipped model)."
    ),
    squares: str | None = typer.Option(None, help="Square IDs to explain, e.g. 1,5,9."),
    top: int | None = typer.Option(None, help="Explain the K best squares by overall score."),
) -> None:
    """Draw each square's cracking and contamination attention over the square.

    One PNG per square (image | cracking overlay | contamination overlay, the
    predicted scores in the title) and scores.csv with every square's scores.
    Without --squares or --top every square is drawn.

    Examples:

        $ cryoscout explain ext -o explain --top 10

        $ cryoscout explain ext -o explain --squares 1,5,9 --model runs/ss
    """
    from cryoscout.errors import InputError
    from cryoscout.screening.explain import explain_extraction

    wanted = None
    if squares:
        try:
            wanted = [int(s) for s in squares.split(",") if s.strip()]
        except ValueError:
            raise InputError("--squares", f"expected IDs like 1,5,9, not {squares!r}") from None
    if top is not None and top < 1:
        raise InputError("--top", "must be at least 1")
    written = explain_extraction(extraction, out, model_dir=model, squares=wanted, top=top)
    typer.echo(f"{len(written)} overlays and scores.csv -> {out}")
