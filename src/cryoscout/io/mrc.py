"""MRC images, stacks and volumes through mrcfile, with pixel sizes in Å."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from cryoscout.errors import InputError
from cryoscout.io.atomic import atomic_path


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
    if not path.is_file():
        raise InputError(path, "no such file")
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
    voxel = float(mrc.voxel_size.x)
    if not mmap:
        mrc.close()
    pixel_size = None if voxel <= 0 or abs(voxel - 1.0) < 1e-6 else voxel
    return data, pixel_size


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
