"""Open any atlas input: detect EPU, SerialEM or a single image, and load its tiles.

Detection, in order:

- EPU: an ``Atlas.dm`` file, or a folder holding one;
- SerialEM: a ``.mdoc``, a stack (``.mrc``/``.st``) with ``<stack>.mdoc`` beside it,
  or a folder holding exactly one ``.mdoc``;
- single image: ``.mrc``, ``.tif``/``.tiff`` or ``.png``, or a folder holding exactly
  one such image (MRC preferred over TIFF over PNG, so that a preview picture beside
  a simulated ``atlas.mrc`` does not make the folder ambiguous).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cryoscout.errors import InputError
from cryoscout.io.atlas_source import AtlasSource, TileRecord
from cryoscout.io.epu import ATLAS_FILE, read_epu_atlas
from cryoscout.io.images import (
    MRC_SUFFIXES,
    PILLOW_SUFFIXES,
    TIFF_SUFFIXES,
    read_image_pixels,
    read_single_image,
)
from cryoscout.io.serialem import mdoc_for, read_serialem_montage
from cryoscout.io.validate import pixel_size

#: A tile with more non-finite pixels than this is corrupt rather than saturated.
MAX_NONFINITE_FRACTION = 0.01


def _from_folder(folder: Path) -> Path:
    """The one atlas input a folder holds."""
    if (folder / ATLAS_FILE).is_file():
        return folder / ATLAS_FILE
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    mdocs = [p for p in files if p.suffix.lower() == ".mdoc"]
    if len(mdocs) == 1:
        return mdocs[0]
    if len(mdocs) > 1:
        names = ", ".join(p.name for p in mdocs[:4])
        raise InputError(folder, f"holds {len(mdocs)} .mdoc files ({names}); name one")
    for suffixes in (MRC_SUFFIXES, TIFF_SUFFIXES, PILLOW_SUFFIXES):
        images = [p for p in files if p.suffix.lower() in suffixes]
        if len(images) == 1:
            return images[0]
        if len(images) > 1:
            names = ", ".join(p.name for p in images[:4])
            raise InputError(folder, f"holds {len(images)} images ({names}); name one")
    raise InputError(folder, "no atlas here: no Atlas.dm, .mdoc, .mrc, .tif, .png or .jpg")


def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """Which reader an input needs: ``("epu" | "serialem" | "image", file)``.

    Raises
    ------
    InputError
        Missing path, an empty or ambiguous folder, or an unknown file type.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        path = _from_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".dm":
        return "epu", path
    if suffix == ".mdoc":
        return "serialem", path
    if suffix in MRC_SUFFIXES:
        return ("serialem" if mdoc_for(path).is_file() else "image"), path
    if suffix in TIFF_SUFFIXES + PILLOW_SUFFIXES:
        return "image", path
    raise InputError(
        path, "unknown atlas format: expected Atlas.dm, .mdoc, .mrc, .tif/.tiff, .png or .jpg"
    )


def open_atlas(path: str | os.PathLike, pixel_size_A: float | None = None) -> AtlasSource:
    """Read an atlas input's metadata, whatever microscope software wrote it.

    Parameters
    ----------
    path
        EPU ``Atlas.dm`` (or its folder), SerialEM ``.mdoc`` or stack, a single
        ``.mrc``/``.tif``/``.png``/``.jpg``, or a folder holding exactly one of these.
    pixel_size_A
        Pixel size in Å of the montage; overrides whatever the metadata says.

    Returns
    -------
    AtlasSource
        No pixels are loaded; tile image files need not exist.

    Raises
    ------
    InputError
        Unknown format, missing or unreadable file, missing metadata fields.

    Examples
    --------
    >>> src = open_atlas("../shared/data/epu")  # doctest: +SKIP
    >>> src.format, len(src.tiles), len(src.known_squares)  # doctest: +SKIP
    ('epu', 8, 47)
    """
    if pixel_size_A is not None:
        pixel_size_A = pixel_size("--pixel-size", "the pixel size", pixel_size_A)
    fmt, file = detect_format(path)
    if fmt == "epu":
        source = read_epu_atlas(file)
    elif fmt == "serialem":
        source = read_serialem_montage(file)
    else:
        return read_single_image(file, pixel_size_A)
    if pixel_size_A is not None:
        source.pixel_size_A = float(pixel_size_A)
    return source


def load_tile(source: AtlasSource, tile: TileRecord) -> np.ndarray:
    """Load one tile's pixels.

    Parameters
    ----------
    source
        The atlas the tile belongs to (named in errors).
    tile
        One of ``source.tiles``.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` float32, rows as mrcfile (or tifffile/Pillow) returns them. For EPU
        the shape is the tile file's, which may differ from ``(tile.height, tile.width)``
        when EPU placed binned tiles on the atlas.

    Raises
    ------
    InputError
        The metadata names no file, or the file is missing, unreadable, has no such
        section, or more than 1 % of its pixels are NaN or infinite. (Fewer bad pixels,
        e.g. saturated ones, are returned as NaN: the montage's "no data".)
    """
    if tile.path is None:
        raise InputError(source.path, f"tile {tile.index} names no image file")
    if tile.path.is_dir():
        raise InputError(
            tile.path, f"tile {tile.index} named by {source.path.name} is a folder, not an image"
        )
    if not tile.path.is_file():
        raise InputError(tile.path, f"tile {tile.index} named by {source.path.name} is missing")
    if tile.section is None:
        image, _ = read_image_pixels(tile.path)
    else:
        image = _load_section(tile.path, tile.section)
    bad = ~np.isfinite(image)
    if bad.any():
        where = "" if tile.section is None else f"section {tile.section}: "
        if bad.mean() > MAX_NONFINITE_FRACTION:
            raise InputError(
                tile.path, f"{where}{100 * bad.mean():.3g}% of the pixels are NaN or infinite"
            )
        image[bad] = np.nan
    return image


def _load_section(path: Path, section: int) -> np.ndarray:
    import mrcfile

    from cryoscout.io.mrc import read_mrc_header

    read_mrc_header(path)  # sizes, mode and length checked before mapping
    try:
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            data = mrc.data
            if data is None:
                raise InputError(path, "not an MRC file, or its data block is truncated")
            if data.ndim == 2:
                data = data[None]
            if not 0 <= section < data.shape[0]:
                raise InputError(path, f"has {data.shape[0]} sections; no section {section}")
            return np.array(data[section], dtype=np.float32)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a readable MRC stack ({exc})") from None
