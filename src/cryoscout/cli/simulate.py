"""``cryoscout simulate``: data with known ground truth."""

import typer

from cryoscout.cli import simulate_atlas, simulate_tomogram

app = typer.Typer(help="Simulate atlases and tomograms with ground truth.", no_args_is_help=True)
app.command("atlas")(simulate_atlas.atlas)
app.command("tomogram")(simulate_tomogram.tomogram)
