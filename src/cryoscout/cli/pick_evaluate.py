"""``cryoscout pick evaluate``: score picks against true particle centres."""

from __future__ import annotations

from pathlib import Path

import typer

#: The CZII challenge's per-type weights (``--weights czii``).
CZII_WEIGHTS = {
    "apo-ferritin": 1.0,
    "beta-amylase": 0.0,
    "beta-galactosidase": 2.0,
    "ribosome": 1.0,
    "thyroglobulin": 2.0,
    "virus-like-particle": 1.0,
}


def _parse_class_values(
    text: str, option: str, names: dict[int, str], allow_zero: bool = False
) -> float | dict[int, float]:
    """``"5"`` -> 5.0; ``"1:5,ribosome:8"`` -> ``{1: 5.0, 3: 8.0}`` (names via ``names``)."""
    from cryoscout.errors import InputError

    by_name = {n: c for c, n in names.items()}
    ok = (lambda v: v >= 0) if allow_zero else (lambda v: v > 0)
    kind = "non-negative" if allow_zero else "positive"
    try:
        if ":" not in text:
            value = float(text)
            if not ok(value):
                raise ValueError
            return value
        out: dict[int, float] = {}
        for part in text.split(","):
            c, v = (s.strip() for s in part.rsplit(":", 1))
            cls = by_name[c] if c in by_name else int(c)
            out[cls] = float(v)
            if not ok(out[cls]) or cls < 1:
                raise ValueError
        return out
    except (ValueError, KeyError):
        known = ", ".join(names.values()) or "none"
        raise InputError(
            option,
            f"expected a {kind} number or class:value pairs like 1:5,2:8 or ribosome:8 "
            f"(class names known: {known}), got {text!r}",
        ) from None


def evaluate(
    files: list[Path] | None = typer.Argument(
        None,
        help="PICKS TRUTH pairs, one per tomogram: picks (CSV, .coords, text, RELION STAR) "
        "then true centres (e.g. a simulator's particles.csv).",
        metavar="PICKS TRUTH",
        show_default=False,
    ),
    radius: str | None = typer.Option(
        None,
        "--radius",
        help="Particle radius in voxels (Å with --copick): 5, or per class 1:5,2:8 or "
        "ribosome:12 (default: the truth's classes.csv, or the copick project's radii).",
    ),
    metric: str = typer.Option(
        "f1",
        "--metric",
        help="f1: one-to-one P/R/F1 within the radius (always shown); czii: also the CZII "
        "challenge score (many-to-one within half the radius, F-beta 4, weighted).",
    ),
    weights: str | None = typer.Option(
        None,
        "--weights",
        help="CZII per-class weights, class:value like --radius, or 'czii' for the "
        "challenge's (apo-ferritin 1, beta-amylase 0, beta-galactosidase 2, ribosome 1, "
        "thyroglobulin 2, virus-like-particle 1). Default: equal.",
    ),
    templates: Path | None = typer.Option(
        None,
        "--templates",
        help="Template folder: radii from the maps (classes named as in the truth's 'name').",
    ),
    tomograms: list[Path] | None = typer.Option(
        None,
        "--tomogram",
        help="Tomogram .mrc: shape and voxel size for RELION STAR files. Once for all pairs, "
        "or once per pair in order.",
    ),
    tilt_series_pixel_size: float | None = typer.Option(
        None,
        "--tilt-series-pixel-size",
        help="Unbinned tilt-series pixel size (Å) for RELION 4 files, whose coordinates are "
        "tilt-series pixels (with --tomogram for its voxel size).",
    ),
    binning: float | None = typer.Option(
        None, "--binning", help="Or the tomogram's binning relative to the tilt series."
    ),
    tomo_name: str | None = typer.Option(
        None, "--tomo-name", help="Tomogram to keep from STAR files listing several."
    ),
    copick: Path | None = typer.Option(
        None,
        "--copick",
        help="A copick project's config.json instead of files (needs the copick package): "
        "every run, coordinates and radii in Å as the project gives them.",
    ),
    copick_picks: str | None = typer.Option(
        None, "--picks", help="With --copick: the picks' user_id[/session_id]."
    ),
    copick_truth: str = typer.Option(
        "curation/0", "--truth", help="With --copick: the truth's user_id[/session_id]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score picks against true centres, per class (named as in the truth's classes.csv).

    The default report pairs picks and true centres one-to-one: a pick is a hit when it
    lies at most the class radius from a true centre that no other pick has taken
    (maximum matching); precision, recall and F1 per class and over all classes.

    --metric czii adds the score of the CZII cryo-ET object identification challenge
    (Kaggle 2024-25), reproduced exactly: a true centre counts as found when any pick of
    its class lies at most half the particle radius away; counts are summed over all
    tomograms; F-beta with beta 4 per class; the weighted mean divided by the sum of all
    weights given. Classes that only the picks have are ignored.

    Several PICKS TRUTH pairs are scored together (one pair per tomogram), or all runs of
    a copick project (--copick, the CZII challenge's layout; truth user curation, session
    0). The radius comes from --radius, the template maps (--templates), classes.csv
    beside the truth, or the copick project's particle radii (Å).

    Examples:

    \b
        $ cryoscout pick evaluate run/picks.csv sim2/particles.csv --radius 8

    \b
        $ cryoscout pick evaluate p1.csv sim1/particles.csv p2.csv sim2/particles.csv \\
            --metric czii --weights 4v94:1,1u6g:2 --json

    \b
        $ cryoscout pick evaluate picks_relion4.star sim2/particles.csv \\
            --tomogram sim2/tomogram.mrc --tilt-series-pixel-size 2.5

    \b
        $ cryoscout pick evaluate --copick czii/config.json --picks mymodel/1 \\
            --metric czii --weights czii
    """
    import json

    from cryoscout.errors import InputError
    from cryoscout.picking.evaluate import czii_score, evaluate_picks

    if metric not in ("f1", "czii"):
        raise InputError("--metric", f"unknown metric {metric!r}; use f1 or czii")
    if weights is not None and metric != "czii":
        raise InputError("--weights", "weights belong to the CZII score; add --metric czii")
    files = list(files or [])
    tomograms = list(tomograms or [])
    if copick is not None:
        if files:
            raise InputError(files[0], "give either PICKS TRUTH files or --copick, not both")
        if not copick_picks:
            raise InputError("--picks", "--copick needs --picks USER_ID[/SESSION_ID]")
        picks_df, truth_df, names, project_radii = _read_copick(copick, copick_picks, copick_truth)
    else:
        if not files or len(files) % 2:
            raise InputError(
                files[-1] if files else None,
                "expected PICKS TRUTH pairs: an even number of files, picks first",
            )
        pairs = list(zip(files[::2], files[1::2], strict=True))
        if len(tomograms) not in (0, 1, len(pairs)):
            raise InputError(
                "--tomogram",
                f"give one tomogram, or one per pair ({len(pairs)}), not {len(tomograms)}",
            )
        picks_df, truth_df, names = _read_pairs(
            pairs, tomograms, tomo_name, tilt_series_pixel_size, binning
        )
    if radius is not None:
        radii = _parse_class_values(radius, "--radius", names)
    elif copick is not None:
        radii = project_radii
    else:
        radii = _radii_from_files([t for _, t in pairs], templates, tomograms, names)
    if isinstance(radii, dict):
        missing = sorted(set(truth_df["class"]) - set(radii))
        if missing:
            raise InputError("--radius", f"no radius for class {names.get(missing[0], missing[0])}")

    result = evaluate_picks(picks_df, truth_df, radii)
    result.per_class.index = [names.get(c, str(c)) for c in result.per_class.index]
    czii = None
    if metric == "czii":
        czii = czii_score(picks_df, truth_df, radii, _czii_weights(weights, names, truth_df))
        czii.per_class.index = [names.get(c, str(c)) for c in czii.per_class.index]

    if as_json:
        out = result.to_dict()
        if czii is not None:
            out["czii"] = czii.to_dict()
        typer.echo(json.dumps(out))
        return
    typer.echo(_table(result.per_class, result.overall))
    if czii is not None:
        typer.echo("")
        typer.echo(
            f"CZII score {czii.score:.4f} (F-beta {czii.beta:g} per class, many-to-one "
            "within half the radius, counts summed over tomograms, weighted mean):"
        )
        typer.echo(_table(czii.per_class))


def _table(per_class, overall: dict | None = None) -> str:
    import pandas as pd

    table = per_class.copy().astype(object)
    if overall is not None:
        table.loc["all"] = pd.Series(overall)
        table.loc["all", "radius"] = ""
    for k in ("tp", "fp", "fn"):
        table[k] = table[k].astype(int)
    table.index.name = "class"
    return table.to_string(float_format=lambda v: f"{v:.3f}")


def _read_pairs(pairs, tomograms, tomo_name, ts_pixel, binning):
    """Read every pair; one table each of picks and truth with a ``tomo`` column."""
    from cryoscout.io.coords import read_coords
    from cryoscout.picking.evaluate import stack_tomograms

    picks, truths, names = [], [], {}
    geometry = [_geometry(t) for t in tomograms]
    for i, (p_path, t_path) in enumerate(pairs):
        shape, voxel = geometry[i if len(geometry) > 1 else 0] if geometry else (None, None)
        kw = {
            "tomo_name": tomo_name,
            "voxel_size_A": voxel,
            "shape": shape,
            "tilt_series_pixel_size_A": ts_pixel,
            "binning": binning,
        }
        truth = read_coords(t_path, **kw)
        pick = read_coords(p_path, **kw)
        for source, table in (
            (t_path.parent / "classes.csv", None),
            (t_path, truth),
            (p_path, pick),
        ):
            _merge_names(names, source, table)
        picks.append(pick)
        truths.append(truth)
    return stack_tomograms(picks), stack_tomograms(truths), names


def _read_copick(config: Path, picks: str, truth: str):
    """Picks and truth tables (Å, ``tomo`` = run name), names and radii (Å) of a project."""
    from cryoscout.io.copick_project import read_copick_picks

    def who(text: str) -> tuple[str, str | None]:
        user, _, session = text.partition("/")
        return user, session or None

    p = read_copick_picks(config, *who(picks))
    t = read_copick_picks(config, *who(truth))
    return p.table, t.table, t.names, t.radius_A


def _geometry(tomogram: Path) -> tuple[tuple[int, ...], float | None]:
    from cryoscout.io.mrc import read_mrc

    data, voxel = read_mrc(tomogram, mmap=True)
    return tuple(int(s) for s in data.shape), voxel


def _merge_names(names: dict[int, str], source: Path, table) -> None:
    """Add ``class -> name`` pairs from a classes.csv (``table`` None) or a coordinate table."""
    import pandas as pd

    from cryoscout.errors import InputError

    if table is None:
        if not source.is_file():
            return
        table = pd.read_csv(source)
    if "name" not in table or "class" not in table:
        return
    for c, n in zip(table["class"].astype(int), table["name"].astype(str), strict=True):
        if names.setdefault(int(c), n) != n:
            raise InputError(source, f"class {c} is named {n!r} here but {names[c]!r} elsewhere")


def _czii_weights(text: str | None, names: dict[int, str], truth) -> dict | None:
    from cryoscout.errors import InputError

    if text is None:
        return None
    if text.strip().lower() == "czii":
        by_name = {n: c for c, n in names.items()}
        unknown = sorted(set(by_name) - set(CZII_WEIGHTS))
        if unknown or not by_name:
            raise InputError(
                "--weights",
                f"'czii' needs the challenge's class names ({', '.join(CZII_WEIGHTS)}); "
                f"found {', '.join(sorted(by_name)) or 'no names'}",
            )
        # Types absent here keep their names as keys: they match no class, yet their
        # weights count in the denominator, as in the challenge.
        return {by_name.get(n, n): w for n, w in CZII_WEIGHTS.items()}
    values = _parse_class_values(text, "--weights", names, allow_zero=True)
    if not isinstance(values, dict):
        raise InputError("--weights", "give class:weight pairs, e.g. 1:1,2:2 or ribosome:1")
    missing = sorted(set(truth["class"]) - set(values))
    if missing:
        raise InputError("--weights", f"no weight for class {names.get(missing[0], missing[0])}")
    return values


def _radii_from_files(truths: list[Path], templates, tomograms, names) -> dict:
    """Per-class radius from template maps, or from the simulator's classes.csv files."""
    import pandas as pd

    from cryoscout.errors import InputError

    if templates is not None:
        from cryoscout.simulate.tomo_phantom import prepare_template
        from cryoscout.simulate.tomogram import load_templates

        if not names:
            raise InputError(
                truths[0], "--templates needs class names (a 'name' column or classes.csv)"
            )
        maps = load_templates(templates, list(names.values()))
        target = _geometry(tomograms[0])[1] if tomograms else None
        out = {}
        for c, name in names.items():
            dens, vox = maps[name]
            out[c] = prepare_template(name, dens, vox, target or vox).radius
        return out
    out: dict[int, float] = {}
    for truth in truths:
        classes_csv = truth.parent / "classes.csv"
        if not classes_csv.is_file():
            raise InputError("--radius", "give --radius (or --templates) to set the hit radius")
        t = pd.read_csv(classes_csv)
        if "radius_vox" not in t or "class" not in t:
            raise InputError(classes_csv, "needs columns class, radius_vox")
        for c, r in zip(t["class"].astype(int), t["radius_vox"].astype(float), strict=True):
            if out.setdefault(int(c), float(r)) != float(r):
                raise InputError(classes_csv, f"class {c} has radius {r} here, {out[c]} elsewhere")
    return out
