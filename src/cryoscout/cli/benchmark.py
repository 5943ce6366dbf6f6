"""``cryoscout benchmark``: the paper's evaluation protocols."""

import typer

app = typer.Typer(help="Reproduce the papers' evaluations.", no_args_is_help=True)


@app.command("table1")
def table1() -> None:
    """XCryoNet Table 1 (placeholder until the screening issue lands)."""
    raise NotImplementedError("table1")
