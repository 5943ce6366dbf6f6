"""``cryoscout pick predict``: pick particles in a tomogram with a trained network."""

from __future__ import annotations

from pathlib import Path

import typer

_SUFFIX = {
    "csv": "_picks.csv",
    "coords": "_picks.coords",
    "relion4": "_picks_relion4.star",
    "relion5": "_picks_relion5.star",
}


def _new_mmap(stack, path: Path, shape, mode: int, voxel_size: float | None):
    """A memory-mapped MRC volume written under a temporary name (renamed on success)."""
    import mrcfile

    from cryoscout.io.atomic import atomic_path

    tmp = stack.enter_context(atomic_path(path))
    mrc = stack.enter_context(
        mrcfile.new_mmap(tmp, shape=tuple(shape), mrc_mode=mode, overwrite=True)
    )
    if voxel_size is not None:
        mrc.voxel_size = voxel_size
    return mrc.data


def predict(
    run_dir: Path = typer.Argument(..., help="Run folder of `cryoscout pick train` (or model.pt)."),
    tomogram: Path = typer.Argument(..., help="Tomogram .mrc to pick."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    formats: str = typer.Option(
        "csv,relion5", "--format", help="Pick files to write: csv, coords, relion4, relion5."
    ),
    threshold: float = typer.Option(
        0.1, "--threshold", help="MP-NMS: minimum pooled foreground fraction of a pick (0-1)."
    ),
    particle_radius: str | None = typer.Option(
        None,
        "--particle-radius",
        help="Particle radius in voxels for MP-NMS: 8, or per class 1:9,2:7 "
        "(default: recorded at training, else 1.7x the label radius).",
    ),
    tile: int = typer.Option(0, "--tile", help="Tile side in voxels (default: the patch size)."),
    margin: int = typer.Option(
        -1, "--margin", help="Tile margin discarded (default: a sixth of the tile)."
    ),
    save_maps: bool = typer.Option(
        False,
        "--save-probabilities",
        help="Also write segmentation.mrc (class per voxel) and scores.mrc (its probability).",
    ),
    tomo_name: str | None = typer.Option(
        None, "--tomo-name", help="rlnTomoName in STAR files (default: the file name)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
) -> None:
    """Pick particles: segment the tomogram tile by tile, then find centres by MP-NMS.

    The tomogram is read memory-mapped and segmented in overlapping tiles whose
    margins are discarded, so large tomograms work and tile edges leave no seams.
    Picks are written as <name>_picks.csv (with scores), .coords, and RELION 4 / RELION 5
    STAR files.

    Examples:

    \b
        $ cryoscout pick predict run1 sim3/tomogram.mrc -o picks3

    \b
        $ cryoscout pick predict run1 TS_01.mrc -o picks --format relion5,coords \\
            --threshold 0.2 --tile 96 --margin 12 --save-probabilities
    """
    from cryoscout.errors import InputError

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in _SUFFIX]
    if bad or not fmts:
        raise InputError(
            "--format", f"unknown format {bad[0] if bad else formats!r}; use {', '.join(_SUFFIX)}"
        )
    if not 0 <= threshold <= 1:
        raise InputError("--threshold", "must lie between 0 and 1")

    import contextlib

    from cryoscout.io.coords import write_picks
    from cryoscout.io.mrc import read_mrc
    from cryoscout.picking.infer import TomogramPrediction, predict_tomogram
    from cryoscout.picking.mpnms import mp_nms
    from cryoscout.picking.weights import load_model
    from cryoscout.runinfo import write_run_config

    model, info = load_model(run_dir)
    volume, voxel_size = read_mrc(tomogram, mmap=True)
    if volume.ndim != 3:
        raise InputError(tomogram, f"expected a 3D tomogram, got an array of shape {volume.shape}")
    tile = tile or info.patch_size
    margin = margin if margin >= 0 else max(tile // 6, 1)
    if tile <= 2 * margin:
        raise InputError("--tile", f"tile ({tile}) must be larger than twice the margin ({margin})")
    classes = list(range(1, model.num_classes + 1))
    # MP-NMS is sized by the particle radius (kernel, merge distance): recorded by
    # `pick train --val-radius`, else about 1.7x the label radius (labels ~0.6 r).
    recorded = {int(c): float(r) for c, r in info.extra.get("particle_radius", {}).items()}
    radius = {c: recorded.get(c, 1.7 * info.radius.get(c, 1.0)) for c in classes}
    if particle_radius:
        from cryoscout.cli.pick_train import parse_radius

        given = parse_radius(particle_radius, "--particle-radius")
        radius = given if isinstance(given, dict) else dict.fromkeys(classes, given)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    with contextlib.ExitStack() as stack:
        out = None
        if save_maps:
            # Maps are written tile by tile into memory-mapped MRC files, so a tomogram
            # larger than memory still works; atomic_path renames them when complete.
            out = TomogramPrediction(
                labels=_new_mmap(stack, output / "segmentation.mrc", volume.shape, 0, voxel_size),
                scores=_new_mmap(stack, output / "scores.mrc", volume.shape, 2, voxel_size),
            )
        pred = predict_tomogram(
            model,
            volume,
            tile=tile,
            margin=margin,
            normalization=info.normalization,
            device=device,
            out=out,
        )
        picks = mp_nms(pred.labels, radius, threshold=threshold, classes=classes)
    if len(picks):
        picks["name"] = [info.class_names[c - 1] for c in picks["class"]]

    name = tomo_name or tomogram.stem
    written = []
    for fmt in fmts:
        path = output / f"{tomogram.stem}{_SUFFIX[fmt]}"
        write_picks(path, picks, fmt, tomo_name=name, voxel_size_A=voxel_size, shape=volume.shape)
        written.append(path)
    if save_maps:
        written += [output / "segmentation.mrc", output / "scores.mrc"]
    write_run_config(
        output,
        {
            "model": run_dir,
            "tomogram": tomogram,
            "tile": tile,
            "margin": margin,
            "threshold": threshold,
            "device": device,
            "n_picks": len(picks),
            "picks_per_class": {
                info.class_names[c - 1]: int((picks["class"] == c).sum()) if len(picks) else 0
                for c in classes
            },
        },
    )
    typer.echo(f"{len(picks)} picks in {tomogram}")
    for path in written:
        typer.echo(f"wrote {path}")
