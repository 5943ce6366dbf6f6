"""MRC images, stacks and volumes through mrcfile, with pixel sizes in Å."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from cryoscout.errors import InputError
from cryoscout.io.atomic import atomic_path
from cryoscout.io.validate import MAX_IMAGE_SIDE, PIXEL_SIZE_RANGE_A, finite

#: MRC modes of real-valued images (0 int8, 1 int16, 2 float32, 6 uint16, 12 float16,
#: 101 packed 4-bit); 3 and 4 are complex (Fourier transforms), not images.
_REAL_MODES = {0: 1.0, 1: 2.0, 2: 4.0, 6: 2.0, 12: 2.0, 101: 0.5}


def read_mrc_header(path: str | os.PathLike):
    """The header of an MRC file (a copy), checked against the file it describes.

    Headers from microscope software are often slightly off (machine stamps, map
    IDs), so those quirks are ignored; what the data depends on is checked: sizes
    positive and plausible, a real-valued data mode, a file long enough for the data
    the header promises, finite cell dimensions (the pixel size).

    Raises
    ------
    InputError
        Missing, not an MRC file, or a header that cannot describe this file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "is a folder, not an MRC file" if path.is_dir() else "no such file")
    header = _raw_header(path)
    sizes = [int(header.nx), int(header.ny), int(header.nz)]
    if min(sizes) < 1 or max(sizes) > MAX_IMAGE_SIDE:
        raise InputError(
            path, "not an MRC file, or a corrupt header: it claims {}x{}x{} voxels".format(*sizes)
        )
    mode = int(header.mode)
    if mode in (3, 4):
        raise InputError(path, f"holds complex numbers (MRC mode {mode}), not a real image")
    if mode not in _REAL_MODES:
        raise InputError(path, f"not an MRC file, or a corrupt header: unknown data mode {mode}")
    if int(header.nsymbt) < 0:
        raise InputError(path, "not an MRC file, or a corrupt header: negative extended header")
    expected = 1024 + int(header.nsymbt) + int(np.prod(sizes) * _REAL_MODES[mode])
    actual = path.stat().st_size
    if actual < expected:
        raise InputError(
            path,
            "is truncated: its header promises {}x{}x{} voxels ({} bytes) but the file has "
            "{} bytes".format(*sizes, expected, actual),
        )
    for axis in ("x", "y", "z"):
        finite(path, f"cell dimension {axis} (pixel size) in the header", header.cella[axis])
    return header


def _raw_header(path: Path):
    """The 1024-byte header as mrcfile interprets it, read without trusting its sizes.

    mrcfile allocates the extended header the header claims before reading it (2 GiB
    for a corrupt ``nsymbt``), so the sizes are checked here first.
    """
    from mrcfile import utils
    from mrcfile.dtypes import HEADER_DTYPE

    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_DTYPE.itemsize)
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc.strerror})") from None
    if len(raw) < HEADER_DTYPE.itemsize:
        raise InputError(path, f"not an MRC file: {len(raw)} bytes, shorter than a header")
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).reshape(()).view(np.recarray).copy()
    try:
        order = utils.byte_order_from_machine_stamp(header.machst)
    except ValueError:
        order = "<"  # as mrcfile does for odd machine stamps
    header.dtype = header.dtype.newbyteorder(order)
    if int(header.mode) not in _REAL_MODES and int(header.mode) not in (3, 4):
        swapped = header.copy()
        swapped.dtype = swapped.dtype.newbyteorder()  # a wrong machine stamp, seen in the wild
        if int(swapped.mode) in _REAL_MODES:
            header = swapped
    return header


def header_pixel_size(path: str | os.PathLike, header) -> float | None:
    """The x pixel size in Å of a checked header; ``None`` for the 0 or 1 Å of 'unknown'."""
    pixel = float(header.cella.x) / max(int(header.mx), 1)
    if pixel <= 0 or abs(pixel - 1.0) < 1e-6:
        return None
    return finite(path, "header pixel size", pixel, *PIXEL_SIZE_RANGE_A, unit=" Å")


def read_mrc(path: str | os.PathLike, mmap: bool = False) -> tuple[np.ndarray, float | None]:
    """Read an MRC file as written by microscope software or by cryo-EM programs.

    Headers from microscope software are often slightly off, so the file is
    opened with ``permissive=True``; a file whose data cannot be read at all
    raises :class:`~cryoscout.errors.InputError`.

    Parameters
    ----------
    path
        The .mrc/.mrcs/.st/.rec file.
    mmap
        Memory-map the data instead of reading it (for large tomograms).

    Returns
    -------
    data : numpy.ndarray
        ``(y, x)`` for an image, ``(n, y, x)`` for a stack, ``(z, y, x)`` for a
        volume, as mrcfile returns it (x = column, y = row).
    pixel_size_A : float or None
        The x pixel size in Å; ``None`` when the header holds 0 or 1 Å, which
        microscope software writes when it does not know.
    """
    import mrcfile

    path = Path(path)
    header = read_mrc_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opener = mrcfile.mmap if mmap else mrcfile.open
            mrc = opener(path, mode="r", permissive=True)
    except Exception as exc:  # mrcfile raises ValueError, OSError, EOFError...
        raise InputError(path, f"not a readable MRC file ({exc})") from None
    if mrc.data is None:
        mrc.close()
        raise InputError(path, "not an MRC file, or its data block is truncated")
    data = mrc.data if mmap else np.array(mrc.data)
    if not mmap:
        mrc.close()
    return data, header_pixel_size(path, header)


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    pixel_size_A: float | None,
    stack: bool = False,
) -> Path:
    """Write ``data`` to an MRC file atomically.

    Parameters
    ----------
    path
        Destination (.mrc, or .mrcs for a stack).
    data
        ``(y, x)``, ``(n, y, x)`` or ``(z, y, x)`` array; float64 is stored as float32.
    pixel_size_A
        Pixel (voxel) size in Å written to the header; ``None`` leaves 0.
    stack
        Mark a 3D array as an image stack (ispg 0) rather than a volume.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import mrcfile

    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(arr))
            if stack and arr.ndim == 3:
                mrc.set_image_stack()
            if pixel_size_A is not None:
                mrc.voxel_size = float(pixel_size_A)
    return Path(path)
