"""Checks on numbers and names as they enter cryoscout, written once for every reader.

Readers call these on every value they take from a file (EPU XML, SerialEM .mdoc, MRC
headers, coordinate tables) so that a bad value stops at the file that holds it, with
an :class:`~cryoscout.errors.InputError` naming the file and the field, instead of
surfacing later as a numpy error, a huge allocation or a silently wrong result.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from cryoscout.errors import InputError

#: Largest montage side cryoscout accepts from metadata, in pixels (a 200 k px atlas side
#: is already 40 times the largest EPU atlas; anything bigger is a corrupt number).
MAX_IMAGE_SIDE = 200_000
#: Stage travel of any TEM is a few mm; positions beyond 10 mm are corrupt numbers.
MAX_STAGE_UM = 10_000.0
#: Plausible pixel sizes: 0.01 Å (nothing is finer) to 10 µm (coarser than any atlas).
PIXEL_SIZE_RANGE_A = (0.01, 1e5)


def finite(
    path: str | os.PathLike | None,
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
) -> float:
    """``value`` as a float when it is finite and within ``[low, high]``.

    Parameters
    ----------
    path
        The file the value comes from (named in the error).
    field
        Which field of the file (e.g. ``"tile 3 AtlasPixelPosition/x"``).
    value
        The number read.
    low, high
        Inclusive bounds; ``None`` for no bound.
    unit
        Shown after the number in the error.

    Raises
    ------
    InputError
        Not a number, NaN, infinite, or out of range.
    """
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"{field} is not a number ({value!r})") from None
    if not math.isfinite(v):
        raise InputError(path, f"{field} is {v}, not a finite number")
    if (low is not None and v < low) or (high is not None and v > high):
        lo = "" if low is None else f"{low:g}"
        hi = "" if high is None else f"{high:g}"
        span = f"{lo} to {hi}" if lo and hi else (f"at least {lo}" if lo else f"at most {hi}")
        raise InputError(path, f"{field} is {v:g}{unit}, outside the plausible range ({span})")
    return v


def positive(path, field: str, value: float, high: float | None = None, unit: str = "") -> float:
    """``value`` when finite and ``> 0`` (and ``<= high``); InputError otherwise."""
    v = finite(path, field, value, None, high, unit)
    if v <= 0:
        raise InputError(path, f"{field} is {v:g}{unit}, not a positive number")
    return v


def pixel_size(path, field: str, value_A: float) -> float:
    """A pixel size in Å within :data:`PIXEL_SIZE_RANGE_A`."""
    v = positive(path, field, value_A, unit=" Å")
    return finite(path, field, v, *PIXEL_SIZE_RANGE_A, unit=" Å")


def image_side(path, field: str, value: float) -> int:
    """A whole, positive image size in pixels, at most :data:`MAX_IMAGE_SIDE`."""
    v = positive(path, field, value, MAX_IMAGE_SIDE, " px")
    if v != round(v):
        raise InputError(path, f"{field} is {v:g} px, not a whole number of pixels")
    return round(v)


def tile_extent(path: str | os.PathLike | None, tiles) -> tuple[int, int]:
    """``(height, width)`` of the montage the tiles span from pixel ``(0, 0)``, checked.

    Each tile must overlap the montage (a tile entirely at negative positions would be
    silently dropped), the montage side must be at most :data:`MAX_IMAGE_SIDE`, and no
    tile may lie far from every other one (more than two tile sides of empty space,
    which no microscope montage has: such a position is a corrupt number).

    Parameters
    ----------
    path
        The metadata file (named in the error).
    tiles
        Objects with ``index, x_px, y_px, width, height`` (finite, sizes positive).
    """
    import numpy as np

    if not tiles:
        return (0, 0)
    box = np.array([[t.x_px, t.y_px, t.width, t.height] for t in tiles], dtype=float)
    x, y, w, h = box.T
    outside = (x + w <= 0) | (y + h <= 0)
    if outside.any():
        t = tiles[int(np.flatnonzero(outside)[0])]
        raise InputError(
            path, f"tile {t.index} at ({t.x_px:g}, {t.y_px:g}) px lies outside the montage"
        )
    if len(tiles) > 1:
        # Empty space between each pair of boxes along x and y (0 where they overlap).
        gx = np.maximum(0, np.maximum(x[:, None], x[None]) - np.minimum(x + w, (x + w)[:, None]))
        gy = np.maximum(0, np.maximum(y[:, None], y[None]) - np.minimum(y + h, (y + h)[:, None]))
        gap = np.hypot(gx, gy)
        np.fill_diagonal(gap, np.inf)
        nearest = gap.min(axis=1)
        far = nearest > 2 * np.maximum(w, h)
        if far.any():
            i = int(np.argmax(np.where(far, nearest, -1)))
            t = tiles[i]
            raise InputError(
                path,
                f"tile {t.index} at ({t.x_px:g}, {t.y_px:g}) px is {nearest[i]:.0f} px away "
                "from every other tile: its position is not plausible",
            )
    height, width = int(np.ceil((y + h).max())), int(np.ceil((x + w).max()))
    for name, side in (("height", height), ("width", width)):
        if side > MAX_IMAGE_SIDE:
            raise InputError(
                path, f"montage {name} of {side} px is beyond the plausible {MAX_IMAGE_SIDE} px"
            )
    return height, width


# --------------------------------------------------------------------------- memory


def available_memory() -> int | None:
    """Bytes of memory this process can use: MemAvailable (Linux), else physical RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: cannot tell
        return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"  # pragma: no cover


def check_memory(path: str | os.PathLike | None, what: str, nbytes: float) -> None:
    """Refuse work that would need more memory than the machine has.

    Parameters
    ----------
    path
        The input or option that asks for it (named in the error).
    what
        What would be allocated (``"a 90000 x 90000 px montage"``).
    nbytes
        Estimated bytes.

    Raises
    ------
    InputError
        When ``nbytes`` exceeds the available memory.
    """
    have = available_memory()
    if have is not None and nbytes > have:
        raise InputError(
            path, f"{what} needs about {_size(nbytes)} of memory; this machine has {_size(have)}"
        )


# --------------------------------------------------------------------------- names

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_filename(name: object, default: str = "unnamed") -> str:
    """A file name made from data that cannot leave its folder or surprise a shell.

    Path separators, ``..``, control characters and anything outside
    ``[A-Za-z0-9._+-]`` become ``_``; leading dots are dropped (no hidden files, no
    ``..``); the result is at most 200 characters and never empty.

    Parameters
    ----------
    name
        Text from an input file (a square ID, a tomogram name...).
    default
        Used when nothing usable is left.

    Examples
    --------
    >>> safe_filename("/../../../X")
    'X'
    >>> safe_filename("square 12/a")
    'square_12_a'
    """
    text = _UNSAFE.sub("_", str(name)).strip("_")
    text = re.sub(r"\.{2,}", ".", text).lstrip("._")
    return text[:200] or default


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / safe_filename(name)``: a path from data that stays inside ``folder``."""
    return Path(folder) / safe_filename(name)
