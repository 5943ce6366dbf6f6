"""``cryoscout pick``: particle picking in tomograms (DeepETPicker)."""

import typer

from cryoscout.cli import pick_evaluate, pick_predict, pick_train
from cryoscout.cli.help import CONTEXT_SETTINGS, Command

app = typer.Typer(
    help="Pick particles in cryo-electron tomograms.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
)
app.command("train", cls=Command)(pick_train.train)
app.command("predict", cls=Command)(pick_predict.predict)
app.command("evaluate", cls=Command)(pick_evaluate.evaluate)
