"""``cryoscout pick``: particle picking in tomograms (DeepETPicker)."""

import typer

from cryoscout.cli import pick_evaluate, pick_predict, pick_train

app = typer.Typer(help="Pick particles in cryo-electron tomograms.", no_args_is_help=True)
app.command("train")(pick_train.train)
app.command("predict")(pick_predict.predict)
app.command("evaluate")(pick_evaluate.evaluate)
