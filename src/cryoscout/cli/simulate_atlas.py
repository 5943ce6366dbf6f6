"""`cryoscout simulate atlas`: a low-magnification grid atlas with ground truth."""

from __future__ import annotations

from pathlib import Path

import typer


def atlas(
    out: Path = typer.Argument(..., help="Output folder (must not exist, or be empty)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same output."),
    fmt: str = typer.Option(
        "mrc", "--format", help="Output format: epu (Atlas.dm + tiles), serialem, or mrc."
    ),
    mesh: int = typer.Option(300, "--mesh", help="Grid mesh: 200, 300 or 400."),
    pixel_size_nm: float = typer.Option(
        500.0, "--pixel-size-nm", help="Atlas pixel size in nm (100-700 is typical)."
    ),
    tiles: str = typer.Option("5x5", "--tiles", help="Tiles as NX or NXxNY, e.g. 5x5."),
    tile_size: int = typer.Option(1024, "--tile-size", help="Tile side in pixels."),
    overlap: float = typer.Option(0.1, "--overlap", help="Tile overlap as a fraction."),
    rotation: float | None = typer.Option(
        None, "--rotation", help="Lattice rotation in degrees; random when omitted."
    ),
    film: str = typer.Option("R1.2/1.3", "--film", help="Holey film: R1.2/1.3, R2/1, R2/2..."),
    broken_rate: float = typer.Option(0.08, "--broken-rate", help="Fraction of broken squares."),
    crack_rate: float = typer.Option(0.12, "--crack-rate", help="Fraction of cracked squares."),
    contamination_rate: float = typer.Option(
        0.25, "--contamination-rate", help="Fraction of contaminated squares."
    ),
    dry_rate: float = typer.Option(0.05, "--dry-rate", help="Fraction of squares without ice."),
    bent_bar_rate: float = typer.Option(
        0.03, "--bent-bar-rate", help="Fraction of squares partly covered by a bent bar."
    ),
    label_noise: float = typer.Option(
        0.0, "--label-noise", help="Std. dev. of scorer noise added to the truth scores."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT folder."),
) -> None:
    """Simulate a tiled grid atlas with truth.csv (square centres and five 0-4 scores).

    The folder gets the atlas in the chosen format, truth.csv (one row per
    square: centre in montage pixels and on the stage, full, brightness,
    squareness, cracking, contamination, overall and the physical state behind
    them) and simulation.yaml (options, seed, version, command line).

    Examples:

    \b
      $ cryoscout simulate atlas sim1 --seed 1
      /abs/path/sim1/atlas.mrc

    \b
      $ cryoscout simulate atlas sim_epu --seed 2 --format epu --mesh 200 --rotation 45

    \b
      $ cryoscout simulate atlas big --tiles 7x5 --tile-size 2048 --pixel-size-nm 300 \\
          --contamination-rate 0.5 --label-noise 0.5
    """
    from cryoscout.errors import InputError
    from cryoscout.io.runfolder import run_folder
    from cryoscout.simulate.atlas import FORMATS, AtlasConfig, simulate_atlas, write_simulated_atlas

    if fmt not in FORMATS:
        raise InputError("--format", f"must be one of {', '.join(FORMATS)} (got {fmt!r})")
    nx, ny = _parse_tiles(tiles)
    config = AtlasConfig(
        mesh=mesh,
        film=film,
        pixel_size_nm=pixel_size_nm,
        tiles_x=nx,
        tiles_y=ny,
        tile_size=tile_size,
        overlap=overlap,
        rotation_deg=rotation,
        broken_rate=broken_rate,
        crack_rate=crack_rate,
        contamination_rate=contamination_rate,
        dry_rate=dry_rate,
        bent_bar_rate=bent_bar_rate,
        label_noise=label_noise,
    )
    config.validate()
    # Checked and locked before the work; the folder appears only when complete.
    with run_folder(out, overwrite=overwrite) as folder:
        sim = simulate_atlas(config, seed)
        main_file = write_simulated_atlas(sim, folder, fmt)
    out = out.absolute()
    n_full = int(sim.truth["full"].sum())
    typer.echo(
        f"{out / main_file.relative_to(folder)}\n"
        f"{len(sim.truth)} squares ({n_full} full) in {out / 'truth.csv'}",
    )


def _parse_tiles(text: str) -> tuple[int, int]:
    """``"5"`` -> (5, 5); ``"7x5"`` -> (7, 5)."""
    from cryoscout.errors import InputError

    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or min(nums, default=0) < 1:
        raise InputError("--tiles", f"expected NX or NXxNY with positive integers (got {text!r})")
    return (nums[0], nums[-1])
