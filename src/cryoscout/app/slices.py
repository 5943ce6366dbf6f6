"""One section of a tomogram as an 8-bit image, for the app's slice viewer.

Only the sections a view needs are read from the memory-mapped (or zarr) array:
``bin`` consecutive sections around the requested index, never the whole volume.
Contrast maps two percentiles of the whole tomogram (from a fixed subsample, see
:func:`contrast_sample`) to 0 and 255.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

AXES = ("z", "y", "x")
BINS = (1, 2, 4)
#: Percentiles kept in the cached contrast table (0, 0.5, ..., 100).
QUANTILES = np.linspace(0.0, 100.0, 201)
#: Sections sampled for the contrast table, and the in-plane stride within them.
SAMPLE_SECTIONS = 16
#: Volumes up to this many voxels are sampled whole (so small ones are exact).
SAMPLE_WHOLE = 8_000_000


def section(volume: Any, axis: str, index: int, bin: int = 1) -> np.ndarray:
    """The (binned) section of ``volume`` through ``index`` along ``axis``, as float32.

    Parameters
    ----------
    volume
        ``(z, y, x)`` array-like (numpy memmap, zarr array) supporting basic slicing.
    axis
        ``z`` (xy view: rows = y, columns = x), ``y`` (xz view: rows = z, columns = x)
        or ``x`` (yz view: rows = z, columns = y).
    index
        Section index in unbinned voxels along ``axis``.
    bin
        Mean over ``bin`` sections (the block ``[index // bin * bin, +bin)``) and over
        ``bin x bin`` pixels; the image is ``N // bin`` on each side (a remainder of
        fewer than ``bin`` voxels at the far edge is left out).

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` float32.

    Raises
    ------
    ValueError
        Unknown axis or bin, or ``index`` outside ``0..N-1``.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
    if bin not in BINS:
        raise ValueError(f"bin must be one of {', '.join(map(str, BINS))}, not {bin}")
    nz, ny, nx = (int(n) for n in volume.shape)
    n = {"z": nz, "y": ny, "x": nx}[axis]
    if not 0 <= index < n:
        raise ValueError(f"{axis} index {index} is outside 0..{n - 1}")
    start = index // bin * bin
    stop = min(start + bin, n)
    if axis == "z":
        block = np.asarray(volume[start:stop], dtype=np.float32)  # (b, y, x)
        img = block[0] if bin == 1 else block.mean(axis=0)  # bin 1: no copy of a memory map
    elif axis == "y":
        block = np.asarray(volume[:, start:stop, :], dtype=np.float32)  # (z, b, x)
        img = block.mean(axis=1)
    else:
        block = np.asarray(volume[:, :, start:stop], dtype=np.float32)  # (z, y, b)
        img = block.mean(axis=2)
    return bin_image(img, bin)


def bin_image(img: np.ndarray, bin: int) -> np.ndarray:
    """Mean over ``bin x bin`` blocks; edges that do not fill a block are dropped."""
    if bin == 1:
        return img
    h, w = img.shape[0] // bin, img.shape[1] // bin
    return img[: h * bin, : w * bin].reshape(h, bin, w, bin).mean(axis=(1, 3), dtype=np.float32)


def lowpass(img: np.ndarray, sigma_vox: float, bin: int = 1) -> np.ndarray:
    """Gaussian low-pass in the plane of the section (``sigma_vox`` in unbinned voxels)."""
    if sigma_vox <= 0:
        return img
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=sigma_vox / bin, mode="nearest", truncate=3.0)


def view(volume: Any, axis: str, index: int, bin: int = 1, sigma_vox: float = 0.0) -> np.ndarray:
    """What the viewer shows before contrast: :func:`section` then :func:`lowpass`."""
    return lowpass(section(volume, axis, index, bin), sigma_vox, bin)


def contrast_sample(volume: Any, bin: int = 1, sigma_vox: float = 0.0) -> np.ndarray:
    """The :data:`QUANTILES` percentiles of a fixed subsample of the volume.

    The sample is made of z views processed exactly as the viewer processes a section
    (``bin``, ``sigma_vox``), so a binned or low-passed view gets the percentiles of what
    it shows: every block of ``bin`` sections for a volume of at most
    :data:`SAMPLE_WHOLE` voxels (the whole volume), else :data:`SAMPLE_SECTIONS` evenly
    spaced ones.

    Returns
    -------
    numpy.ndarray
        ``(len(QUANTILES),)`` float64, non-decreasing.
    """
    nz, ny, nx = (int(n) for n in volume.shape)
    if bin == 1 and sigma_vox <= 0 and nz * ny * nx <= SAMPLE_WHOLE:
        values = np.asarray(volume[:], dtype=np.float32).ravel()
    else:
        blocks = np.arange(0, nz, bin)  # the first section of each block of ``bin``
        if nz * ny * nx > SAMPLE_WHOLE:
            pick = np.linspace(0, len(blocks) - 1, min(SAMPLE_SECTIONS, len(blocks)))
            blocks = blocks[np.unique(pick.round().astype(int))]
        idx = blocks
        values = np.concatenate([view(volume, "z", int(i), bin, sigma_vox).ravel() for i in idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(len(QUANTILES))
    return np.percentile(values, QUANTILES)


def percentile_value(table: np.ndarray, q: float) -> float:
    """The value at percentile ``q`` (0-100) of a :func:`contrast_sample` table."""
    return float(np.interp(q, QUANTILES, table))


def to_uint8(img: np.ndarray, vlo: float, vhi: float) -> np.ndarray:
    """``vlo`` -> 0, ``vhi`` -> 255, linear between, clipped (a flat image is mid-grey)."""
    if not vhi > vlo:
        return np.full(img.shape, 128, np.uint8)
    out = np.subtract(img, np.float32(vlo), dtype=np.float32)  # one new array, then in place
    out *= np.float32(255.0 / (vhi - vlo))
    out += np.float32(0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def png_grey(img: np.ndarray) -> bytes:
    """An 8-bit grey PNG, written for speed: no row filters, zlib Huffman coding only.

    A tomogram section is noise at the pixel level, so LZ77 matching (what PIL spends its
    time on, filters tried per row) gains little: Huffman-only coding gives a file as small
    as PIL's at its fastest level in about a third of the time, which is most of a
    slice's latency (``benchmarks/app_tomogram_slices.py``). Any PNG reader opens it.
    """
    import struct
    import zlib

    h, w = img.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 0  # filter type 0 (none) before each row
    rows[:, 1:] = img
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    data = packer.compress(rows.tobytes()) + packer.flush()

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body)
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


class VolumeCache:
    """A small least-recently-used cache of open volumes (memory maps, zarr arrays).

    Parameters
    ----------
    size
        How many volumes stay open.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[Any, tuple[Any, Callable[[], None] | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, opener: Callable[[], tuple[Any, Callable[[], None] | None]]) -> Any:
        """The volume under ``key``; ``opener() -> (volume, close or None)`` on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        volume, close = opener()  # outside the lock: opening may take a while
        with self._lock:
            self._items[key] = (volume, close)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                _, (_, old_close) = self._items.popitem(last=False)
                if old_close is not None:
                    old_close()
        return volume

    def clear(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for _, close in items:
            if close is not None:
                close()
