"""``cryoscout benchmark``: the paper's evaluation protocols."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoscout.cli.help import CONTEXT_SETTINGS, Command

app = typer.Typer(
    help="Reproduce the papers' evaluations.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
)


@app.command("table1", cls=Command)
def table1(
    data: list[Path] = typer.Argument(
        ..., metavar="FOLDER", help="Extraction folders with labels.csv."
    ),
    out: Path = typer.Option(
        ..., "-o", "--out", metavar="DIR", help="Folder for table1.md and table1.csv."
    ),
    epochs: int = typer.Option(5, help="Epochs per model (paper: 75)."),
    runs: int = typer.Option(2, help="Runs with different random splits (paper: 4)."),
    size: int = typer.Option(64, help="Input size in pixels (paper: 640)."),
    labeled: str = typer.Option("100,500,900", help="Labeled counts, comma-separated."),
    unlabeled: int = typer.Option(1500, help="Unlabeled squares added in SS runs."),
    batch_size: int = typer.Option(32, help="Squares per batch."),
    width: int = typer.Option(16, help="Channels of the first convolution."),
    methods: str = typer.Option("primary,xcryonet", help="Models to compare."),
    baseline: bool = typer.Option(True, help="Add the gradient-boosted-trees baseline rows."),
    random_split: bool = typer.Option(True, help="Run the random split (held-out squares)."),
    by_grid: bool = typer.Option(True, help="Add the by-grid split (held-out atlases)."),
    test_grids: int = typer.Option(1, help="Atlases held out in the by-grid split."),
    seed: int = typer.Option(0, help="Seed of run 0 (run k uses seed + k)."),
    accelerator: str = typer.Option("auto", help="cpu, gpu or auto."),
    precision: str = typer.Option(
        "32-true", help="Lightning precision: 32-true, or bf16-mixed on a recent GPU."
    ),
) -> None:
    """XCryoNet Table 1: {primary, xcryonet} x {FS, SS} x labeled counts, mean ± std.

    Mean absolute difference per score on held-out squares, over several runs
    with random splits, plus a gradient-boosted-trees baseline and a by-grid
    split (train on some atlases, test on atlases never seen). Writes
    table1.md, table1.csv (summary) and table1_runs.csv (every run).

    Examples:

        $ cryoscout benchmark table1 data/atlas* -o bench --size 64 --epochs 5 --runs 2

        $ cryoscout benchmark table1 data/atlas* -o full --size 640 --epochs 75 --runs 4 \\
            --accelerator gpu
    """
    from cryoscout.errors import InputError
    from cryoscout.screening.data import load_screening_data
    from cryoscout.screening.model import VARIANTS
    from cryoscout.screening.table1 import Table1Config, run_table1, write_table1

    try:
        counts = [int(v) for v in labeled.split(",") if v.strip()]
    except ValueError:
        raise InputError("--labeled", f"expected counts like 100,500, not {labeled!r}") from None
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if any(m not in VARIANTS for m in chosen):
        raise InputError("--methods", f"choose from {', '.join(VARIANTS)}")
    if size < 8 or size % 4:
        raise InputError("--size", f"must be a multiple of 4 and at least 8, not {size}")
    cfg = Table1Config(
        labeled=counts, unlabeled=unlabeled, runs=runs, epochs=epochs, size=size, width=width,
        batch_size=batch_size, methods=chosen, baseline=baseline, random_split=random_split,
        by_grid=by_grid, test_grids=test_grids, seed=seed, accelerator=accelerator,
        precision=precision,
    )  # fmt: skip
    dataset = load_screening_data(data, size=size)
    if not dataset.labeled.any():
        raise InputError(data[0], "no labeled squares (labels.csv missing or empty)")
    results = run_table1(dataset, cfg)
    note = (
        f"Mean absolute difference on held-out squares (lower is better); {len(data)} atlases, "
        f"{len(dataset)} squares, size {size} px, {epochs} epochs, {runs} runs."
    )
    paths = write_table1(out, results, note)
    typer.echo(f"table1 -> {', '.join(str(p) for p in paths)}")
