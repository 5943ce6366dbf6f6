"""``cryoscout simulate``: data with known ground truth."""

import typer

from cryoscout.cli import simulate_atlas, simulate_tomogram
from cryoscout.cli.help import CONTEXT_SETTINGS, Command

app = typer.Typer(
    help="Simulate atlases and tomograms with ground truth.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
)
app.command("atlas", cls=Command)(simulate_atlas.atlas)
app.command("tomogram", cls=Command)(simulate_tomogram.tomogram)
