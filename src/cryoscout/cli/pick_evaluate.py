"""``cryoscout pick evaluate``: score picks against true particle centres."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_radius(text: str) -> float | dict[int, float]:
    from cryoscout.errors import InputError

    try:
        if ":" not in text:
            value = float(text)
            if value <= 0:
                raise ValueError
            return value
        out = {}
        for part in text.split(","):
            c, r = part.split(":")
            out[int(c)] = float(r)
            if out[int(c)] <= 0:
                raise ValueError
        return out
    except ValueError:
        raise InputError(
            "--radius",
            f"expected a positive number or class:radius pairs like 1:5,2:8, got {text!r}",
        ) from None


def evaluate(
    picks: Path = typer.Argument(..., help="Picks: CSV, .coords, text or RELION STAR."),
    truth: Path = typer.Argument(..., help="True centres (e.g. a simulator's particles.csv)."),
    radius: str | None = typer.Option(
        None, "--radius", help="Hit radius in voxels: 5, or per class 1:5,2:8."
    ),
    templates: Path | None = typer.Option(
        None,
        "--templates",
        help="Template folder: radii from the maps (classes named as in the truth's 'name').",
    ),
    tomogram: Path | None = typer.Option(
        None, "--tomogram", help="Tomogram .mrc: shape and voxel size for RELION 5 STAR files."
    ),
    tomo_name: str | None = typer.Option(
        None, "--tomo-name", help="Tomogram to keep from STAR files listing several."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score picks against true centres: precision, recall, F1 and F-beta(4) per class.

    A pick is a hit when it lies within the class radius of a true centre not matched
    yet (one-to-one). F-beta(4) (CZII cryo-ET challenge) uses half the radius.
    The radius comes from --radius, or from the template maps (--templates), or from the
    simulator's classes.csv beside the truth file.

    Examples:

        $ cryoscout pick evaluate run/picks.csv sim2/particles.csv --radius 8

        $ cryoscout pick evaluate picks.star sim2/particles.csv --radius 1:12,2:6 \\
            --tomogram sim2/tomogram.mrc --json
    """
    import json

    import pandas as pd

    from cryoscout.errors import InputError
    from cryoscout.io.coords import read_coords
    from cryoscout.picking.evaluate import evaluate_picks

    shape = voxel = None
    if tomogram is not None:
        from cryoscout.io.mrc import read_mrc

        data, voxel = read_mrc(tomogram, mmap=True)
        shape = tuple(int(s) for s in data.shape)
    truth_df = read_coords(truth, tomo_name=tomo_name, voxel_size_A=voxel, shape=shape)
    pick_df = read_coords(picks, tomo_name=tomo_name, voxel_size_A=voxel, shape=shape)

    if radius is not None:
        radii = _parse_radius(radius)
    else:
        radii = _radii_from_files(truth, templates, voxel)
    if isinstance(radii, dict):
        missing = sorted(set(truth_df["class"]).union(pick_df["class"]) - set(radii))
        if missing:
            raise InputError("--radius", f"no radius for class {missing[0]}")

    result = evaluate_picks(pick_df, truth_df, radii)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    table = result.per_class.copy()
    table.loc["all"] = pd.Series(result.overall)
    table["radius"] = table["radius"].astype(object).where(table.index != "all", "")
    for k in ("tp", "fp", "fn"):
        table[k] = table[k].astype(int)
    typer.echo(table.to_string(float_format=lambda v: f"{v:.3f}"))


def _radii_from_files(truth: Path, templates: Path | None, voxel: float | None) -> dict:
    """Per-class radius from template maps, or from a simulator's classes.csv."""
    import pandas as pd

    from cryoscout.errors import InputError

    if templates is not None:
        from cryoscout.simulate.tomo_phantom import prepare_template
        from cryoscout.simulate.tomogram import load_templates

        names = _class_names(truth)
        if not names:
            raise InputError(truth, "--templates needs a 'name' column to link classes to maps")
        maps = load_templates(templates, list(names.values()))
        target = voxel
        out = {}
        for c, name in names.items():
            dens, vox = maps[name]
            out[c] = prepare_template(name, dens, vox, target or vox).radius
        return out
    classes_csv = truth.parent / "classes.csv"
    if classes_csv.is_file():
        t = pd.read_csv(classes_csv)
        return {int(c): float(r) for c, r in zip(t["class"], t["radius_vox"], strict=True)}
    raise InputError("--radius", "give --radius (or --templates) to set the hit radius")


def _class_names(truth: Path) -> dict[int, str]:
    import pandas as pd

    if truth.suffix.lower() != ".csv":
        return {}
    t = pd.read_csv(truth)
    if "name" not in t or "class" not in t:
        return {}
    return dict(zip(t["class"].astype(int), t["name"].astype(str), strict=False))
