"""`cryoscout info`: what an atlas input holds, without processing it."""

from __future__ import annotations

from pathlib import Path

import typer


def info(
    input: Path = typer.Argument(
        ..., help="EPU Atlas.dm (or its folder), SerialEM .mdoc/.mrc, or a .mrc/.tif/.png/.jpg."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="Pixel size in Å; overrides the metadata.", min=0.0
    ),
) -> None:
    """Say what an atlas input holds: format, tiles, pixel size, montage size, grid squares.

    Reads metadata only, so it works when tile images are absent.

    Examples:

      $ cryoscout info Sample4/Atlas
      format: epu ...

      $ cryoscout info LMM.mrc.mdoc --json
      {"format": "serialem", "tiles": 63, "tiles_missing": 63, ...}

      $ cryoscout info atlas.png --pixel-size 4500
    """
    import json

    from cryoscout.io.atlas_reader import open_atlas

    source = open_atlas(input, pixel_size_A=pixel_size)
    named = [t for t in source.tiles if t.path is not None]
    missing = source.missing_tiles()
    files = {t.path for t in named}
    summary = {
        "format": source.format,
        "path": str(source.path),
        "tiles": len(named),
        "tiles_missing": len(missing),
        "tile_files": len(files),
        "pixel_size_A": source.pixel_size_A,
        "montage_shape": list(source.montage_shape),
        "grid_squares": len({s.square_id for s in source.known_squares}),
        "stage_positions": sum(t.stage_x_um is not None for t in source.tiles),
    }
    if json_out:
        typer.echo(json.dumps(summary))
        return
    height, width = source.montage_shape
    pixel = "unknown" if source.pixel_size_A is None else f"{source.pixel_size_A:.6g} Å"
    lines = [
        f"format:        {source.format} ({source.path})",
        f"tiles:         {len(named)} named, {len(missing)} missing on disk",
        f"pixel size:    {pixel}",
        f"montage:       {width} x {height} px (width x height)",
        f"grid squares:  {summary['grid_squares']} listed by the metadata",
    ]
    if source.pixel_size_A is not None and width:
        lines.append(
            f"field of view: {width * source.pixel_size_A / 1e7:.3g} x "
            f"{height * source.pixel_size_A / 1e7:.3g} mm"
        )
    typer.echo("\n".join(lines))
