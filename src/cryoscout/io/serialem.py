"""SerialEM montages: an MRC stack of pieces plus its ``.mdoc``; read one, write one.

SerialEM writes ``<stack>.mdoc`` beside ``<stack>`` (``LMM.mrc`` + ``LMM.mrc.mdoc``):
global keys (``PixelSpacing`` in Å, ``ImageSize``, ``ImageFile``), one ``[ZValue = n]``
section per piece (``PieceCoordinates = x y z`` in pixels, ``StagePosition`` in µm,
optionally ``AlignedPieceCoords`` / ``AlignedPieceCoordsVS`` after blending) and a
closing ``[MontSection = 0]``. The .mdoc is parsed with :mod:`mdocfile`.

Orientation: piece coordinates are IMOD index coordinates of the full montage, whose
y runs along the file's rows (IMOD shows row 0 at the bottom). mrcfile returns rows
in file order, so a piece at ``(x, y)`` fills ``montage[y:y + ny, x:x + nx]`` of the
array as mrcfile reads it: no flip is needed, and the writer keeps the same rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryoscout.errors import InputError
from cryoscout.io.atlas_source import AtlasSource, TileRecord
from cryoscout.io.atomic import write_text
from cryoscout.io.validate import (
    MAX_IMAGE_SIDE,
    MAX_STAGE_UM,
    finite,
    image_side,
    pixel_size,
    tile_extent,
)

STACK_SUFFIXES = (".mrc", ".st", ".map", ".mrcs")


def mdoc_for(stack: Path) -> Path:
    """The ``.mdoc`` SerialEM writes beside ``stack`` (``LMM.mrc`` -> ``LMM.mrc.mdoc``)."""
    return stack.with_name(stack.name + ".mdoc")


def _read_mdoc(path: Path):
    import mdocfile

    # mdocfile logs a warning for every key it does not model; they are harmless here.
    logger = logging.getLogger("mdocfile")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return mdocfile.read(path)
    except Exception as exc:  # mdocfile raises ValueError, KeyError, pydantic errors...
        raise InputError(path, f"not a readable SerialEM .mdoc ({_why(exc)})") from None
    finally:
        logger.setLevel(level)


def _why(exc: Exception) -> str:
    """The field and problem of a parsing error, in a few words."""
    errors = getattr(exc, "errors", None)  # pydantic's ValidationError
    if callable(errors):
        try:
            first = errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ()) if not isinstance(p, int))
            return f"{field}: {first.get('msg', type(exc).__name__)}"
        except Exception:  # an unexpected error layout: fall back to the type
            pass
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def _column(df, name: str) -> list | None:
    """Values of an mdoc key for every piece, or ``None`` when any piece lacks it."""
    if name not in df.columns:
        return None
    values = df[name].tolist()
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        return None
    return values


def _first(df, name: str):
    if name not in df.columns:
        return None
    values = [v for v in df[name].tolist() if v is not None and not _isnan(v)]
    return values[0] if values else None


def _isnan(v) -> bool:
    return isinstance(v, float) and np.isnan(v)


def _stack_for(mdoc: Path, image_file: str | None) -> Path:
    stem = mdoc.with_suffix("")
    if stem.suffix.lower() in STACK_SUFFIXES:
        return stem
    if image_file:
        return mdoc.parent / str(image_file).replace("\\", "/").rsplit("/", 1)[-1]
    return stem.with_name(stem.name + ".mrc")


def _stack_shape(stack: Path) -> tuple[int, int, int] | None:
    """``(nx, ny, nz)`` from the (checked) MRC header; ``None`` when the stack is absent."""
    if not stack.exists():
        return None
    from cryoscout.io.mrc import read_mrc_header

    header = read_mrc_header(stack)
    return int(header.nx), int(header.ny), int(header.nz)


def _numbers(
    mdoc: Path, field: str, value, n: int, low: float, high: float, unit: str = ""
) -> list[float]:
    """The first ``n`` numbers of an mdoc value (a list, or one number), each checked."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if len(values) < n:
        raise InputError(mdoc, f"{field} needs {n} numbers, found {len(values)} ({value!r})")
    return [finite(mdoc, field, v, low, high, unit) for v in values[:n]]


def read_serialem_montage(path: str | os.PathLike) -> AtlasSource:
    """Read a SerialEM montage from its .mdoc (the stack itself need not exist).

    Parameters
    ----------
    path
        The ``.mdoc``, or the stack (``.mrc``/``.st``) with ``<stack>.mdoc`` beside it.

    Returns
    -------
    AtlasSource
        ``format="serialem"``; one :class:`TileRecord` per ``[ZValue]`` section
        (``path`` = the stack, ``section`` = the Z value), placed at
        ``AlignedPieceCoords`` (else ``AlignedPieceCoordsVS``, else ``PieceCoordinates``)
        shifted so that the montage starts at pixel 0; stage positions in µm;
        ``PixelSpacing`` in Å. The tile size is read from the stack's header when the
        stack exists, else from ``ImageSize``.

    Raises
    ------
    InputError
        No .mdoc, an unreadable one, no pieces, or no tile size.
    """
    path = Path(path)
    if path.suffix.lower() == ".mdoc":
        mdoc = path
    else:
        mdoc = mdoc_for(path)
        if not mdoc.is_file():
            raise InputError(path, f"no SerialEM metadata {mdoc.name} beside the stack")
    if not mdoc.is_file():
        raise InputError(mdoc, "no such file")
    df = _read_mdoc(mdoc)
    if "ZValue" not in df.columns:
        raise InputError(mdoc, "no [ZValue] sections: not an image .mdoc")
    pieces = df[df["ZValue"].notna()].reset_index(drop=True)
    if pieces.empty:
        raise InputError(mdoc, "no [ZValue] sections: not an image .mdoc")
    nominal = _column(pieces, "PieceCoordinates")
    if nominal is None:
        raise InputError(mdoc, "missing PieceCoordinates: not a montage .mdoc")
    key = next(
        (k for k in ("AlignedPieceCoords", "AlignedPieceCoordsVS") if _column(pieces, k)),
        "PieceCoordinates",
    )
    side = (-MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    xy = np.array(
        [
            _numbers(mdoc, f"[ZValue = {z}] {key}", c, 2, *side, " px")
            for z, c in zip(pieces["ZValue"], _column(pieces, key), strict=True)
        ]
    )
    xy -= xy.min(axis=0)  # aligned coordinates may start below 0
    sections = [_section(mdoc, z) for z in pieces["ZValue"]]
    if len(set(sections)) < len(sections):
        raise InputError(mdoc, "lists the same [ZValue] section twice")

    stack = path if path.suffix.lower() in STACK_SUFFIXES else None
    stack = stack or _stack_for(mdoc, _first(df, "ImageFile"))
    shape = _stack_shape(stack)
    if shape is not None:
        nx, ny, nz = shape
        if nz != len(sections) or max(sections) >= nz:
            raise InputError(
                mdoc,
                f"lists {len(sections)} pieces (sections up to {max(sections)}) but "
                f"{stack.name} holds {nz} sections",
            )
    else:
        size = _first(df, "ImageSize")
        if size is None:
            raise InputError(mdoc, "no ImageSize and no image stack: tile size unknown")
        nx, ny = (
            image_side(mdoc, "ImageSize", v) for v in _numbers(mdoc, "ImageSize", size, 2, *side)
        )

    pixel = _first(pieces, "PixelSpacing") or _first(df, "PixelSpacing")
    if pixel is not None:
        pixel = finite(mdoc, "PixelSpacing", pixel)
    pixel_A = None if not pixel or pixel == 1.0 else pixel_size(mdoc, "PixelSpacing", pixel)
    stage = _column(pieces, "StagePosition")
    if stage is not None:
        stage = [
            _numbers(
                mdoc, f"[ZValue = {z}] StagePosition", v, 2, -MAX_STAGE_UM, MAX_STAGE_UM, " µm"
            )
            for z, v in zip(sections, stage, strict=True)
        ]
    tiles = [
        TileRecord(
            index=i,
            path=stack,
            x_px=float(xy[i, 0]),
            y_px=float(xy[i, 1]),
            width=nx,
            height=ny,
            stage_x_um=None if stage is None else float(stage[i][0]),
            stage_y_um=None if stage is None else float(stage[i][1]),
            section=sections[i],
        )
        for i in range(len(pieces))
    ]
    return AtlasSource("serialem", mdoc, pixel_A, tiles, tile_extent(mdoc, tiles))


def _section(mdoc: Path, value) -> int:
    z = finite(mdoc, "ZValue", value, 0, 10 * MAX_IMAGE_SIDE)
    if z != int(z):
        raise InputError(mdoc, f"ZValue {z:g} is not a whole section number")
    return int(z)


def write_serialem_montage(
    mrc_path: str | os.PathLike,
    tiles: Sequence[np.ndarray],
    positions_px: Sequence[tuple[float, float]],
    pixel_size_A: float,
    px_to_stage: np.ndarray,
    magnification: float = 135.0,
) -> Path:
    """Write tiles as a SerialEM montage: an MRC stack and ``<stack>.mdoc``.

    The .mdoc has the keys and layout of a real SerialEM 4 montage .mdoc (global
    header, one ``[ZValue = n]`` section per piece, a closing ``[MontSection = 0]``).

    Parameters
    ----------
    mrc_path
        The stack to write (``.mrc``); the .mdoc goes to ``<mrc_path>.mdoc``.
    tiles
        2D arrays ``(ny, nx)``, all the same shape, as mrcfile will read them back.
    positions_px
        ``(x, y)`` top-left corner of each piece in montage pixels (rounded to whole
        pixels, as ``PieceCoordinates`` are integers).
    pixel_size_A
        Pixel size in Å (``PixelSpacing``).
    px_to_stage
        ``(2, 3)`` affine, montage pixels -> stage µm; a piece's ``StagePosition`` is
        the image of its centre pixel ``(x + (nx - 1) / 2, y + (ny - 1) / 2)``.
    magnification
        Nominal magnification written to the .mdoc.

    Returns
    -------
    pathlib.Path
        ``mrc_path``.
    """
    from cryoscout.io.mrc import write_mrc

    mrc_path = Path(mrc_path)
    stack = np.stack([np.asarray(t, dtype=np.float32) for t in tiles])
    if len(stack) != len(positions_px):
        raise ValueError(f"{len(stack)} tiles but {len(positions_px)} positions")
    a = np.asarray(px_to_stage, dtype=float)
    n, ny, nx = stack.shape
    xy = np.rint(np.asarray(positions_px, dtype=float)).astype(int)

    lines = [
        f"PixelSpacing = {pixel_size_A:g}",
        "Voltage = 300",
        f"ImageFile = {mrc_path.name}",
        f"ImageSize = {nx} {ny}",
        "Montage = 1",
        "DataMode = 2",
        "",
        "[T = SerialEM: cryoscout simulated montage]",
        "",
        "[T = Tilt axis angle = 0, binning = 1  spot = 7  camera = 0]",
        "",
    ]
    for z in range(n):
        x, y = xy[z]
        sx, sy = a @ np.array([x + (nx - 1) / 2, y + (ny - 1) / 2, 1.0])
        t = stack[z]
        lines += [
            f"[ZValue = {z}]",
            f"PieceCoordinates = {x} {y} 0",
            f"MinMaxMean = {t.min():g} {t.max():g} {t.mean():g}",
            "TiltAngle = 0",
            f"StagePosition = {sx:.6f} {sy:.6f}",
            "StageZ = 0",
            f"Magnification = {magnification:g}",
            f"PixelSpacing = {pixel_size_A:g}",
            "ImageShift = 0 0",
            "RotationAngle = 0",
            "ExposureTime = 1",
            "Binning = 1",
            "",
        ]
    span = xy.max(axis=0) + np.array([nx, ny])
    frames = (len(np.unique(xy[:, 0])), len(np.unique(xy[:, 1])))
    lines += [
        "[MontSection = 0]",
        "TiltAngle = 0",
        "StagePosition = 0 0",
        f"Magnification = {magnification:g}",
        f"PixelSpacing = {pixel_size_A:g}",
        f"FullMontSize = {span[0]} {span[1]}",
        f"FullMontNumFrames = {frames[0]} {frames[1]}",
        "",
    ]
    write_mrc(mrc_path, stack, pixel_size_A, stack=True)
    write_text(mdoc_for(mrc_path), "\n".join(lines) + "\n")
    return mrc_path
