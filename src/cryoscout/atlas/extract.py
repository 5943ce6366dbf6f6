"""Grid squares cut out of an atlas: a table, a stack of upright crops, automatic labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryoscout.atlas.lattice import Lattice, block_mean, estimate_lattice
from cryoscout.errors import InputError
from cryoscout.io.atlas_source import Montage
from cryoscout.io.validate import check_memory
from cryoscout.progress import track

TABLE_COLUMNS = (
    "square_id",
    "x_px",
    "y_px",
    "stage_x_um",
    "stage_y_um",
    "full",
    "ncc",
    "brightness",
    "squareness",
)


@dataclass
class Extraction:
    """Squares extracted from one atlas.

    Attributes
    ----------
    table
        One row per square (columns :data:`TABLE_COLUMNS`); row i is ``stack[i]``.
    stack
        ``(n, size, size)`` float32 crops of ``fov`` pitches around each centre,
        rotated by the lattice angle so the bars run along the crop edges (every
        square then looks alike to a model, whatever the grid's rotation), in
        units of the atlas reference intensity; 0 where nothing was imaged.
    lattice
        The fitted lattice (montage pixels).
    pixel_size_A
        Pixel size of the crops in Å (``None`` when the atlas has none).
    intensity_reference
        Atlas intensity that maps to 1.0 in the stack (:func:`intensity_reference`).
    fov
        Crop side in lattice pitches.
    """

    table: pd.DataFrame
    stack: np.ndarray
    lattice: Lattice
    pixel_size_A: float | None
    intensity_reference: float
    fov: float

    @property
    def opening_px(self) -> float:
        """Side of a square's opening in crop pixels."""
        size = self.stack.shape[-1]
        return size * self.lattice.square_side_px / (self.fov * self.lattice.pitch_px)


def extract_squares(montage: Montage, size: int = 128, fov: float = 1.0) -> Extraction:
    """Find, crop and label every grid square of an atlas.

    Parameters
    ----------
    montage
        Stitched atlas (:func:`cryoscout.atlas.stitch.stitch`).
    size
        Side of each crop in pixels (the paper used 640).
    fov
        Field of view of each crop in lattice pitches (1.0: the square and half a
        bar around it).

    Returns
    -------
    Extraction

    Raises
    ------
    cryoscout.errors.InputError
        Bad ``size``/``fov``, or an image without a grid lattice.

    Examples
    --------
    >>> ext = extract_squares(montage, size=128)  # doctest: +SKIP
    >>> ext.stack.shape == (len(ext.table), 128, 128)  # doctest: +SKIP
    True
    """
    from cryoscout.atlas.labels import automatic_labels
    from cryoscout.atlas.matching import find_squares

    if not 16 <= int(size) <= 4096:
        raise InputError("--size", f"must be 16-4096 pixels (got {size})")
    if not 0.25 <= float(fov) <= 4.0:
        raise InputError("--fov", f"must be 0.25-4 pitches (got {fov})")
    image = np.asarray(montage.image, dtype=np.float32)
    lattice = estimate_lattice(image, montage.pixel_size_A)
    det = find_squares(image, lattice)
    lattice = det.lattice
    # Reading order: rows of squares top to bottom, left to right within a row.
    order = np.lexsort((det.x_px, np.round(det.y_px / (0.5 * lattice.pitch_px))))
    x, y = det.x_px[order], det.y_px[order]

    step = fov * lattice.pitch_px / size  # montage pixels per crop pixel
    factor = max(1, int(step))  # average first so the resampling does not alias
    if factor == 1:
        small = np.nan_to_num(image, nan=0.0)
    else:
        small, coverage = block_mean(image, factor)
        small = np.where(coverage > 0, small, 0.0).astype(np.float32)
    reference = intensity_reference(image)
    stack = crop_squares(small, x, y, lattice.angle_deg, step, size, factor)
    stack /= reference

    sx, sy = montage.to_stage(x, y)
    table = pd.DataFrame(
        {
            "square_id": np.arange(1, len(x) + 1),
            "x_px": x,
            "y_px": y,
            "stage_x_um": sx,
            "stage_y_um": sy,
            "full": det.full[order].astype(int),
            "ncc": det.ncc[order],
        }
    )
    opening = size * lattice.square_side_px / (fov * lattice.pitch_px)
    labels = automatic_labels(stack, opening)
    table["brightness"] = labels["brightness"]
    table["squareness"] = labels["squareness"]
    pixel_size = None if montage.pixel_size_A is None else float(montage.pixel_size_A * step)
    return Extraction(table, stack, lattice, pixel_size, reference, float(fov))


def intensity_reference(image: np.ndarray) -> float:
    """The atlas intensity that becomes 1.0 in the stack: about the brightest film.

    The 99th percentile of the atlas averaged in 4x4 blocks (so counting noise does
    not set it), from a subsample of blocks for speed.
    """
    small, coverage = block_mean(image[: image.shape[0] // 4 * 4, : image.shape[1] // 4 * 4], 4)
    values = small[coverage > 0.5]
    if values.size > 250_000:
        values = values[:: values.size // 250_000 + 1]
    reference = float(np.percentile(values, 99)) if values.size else 1.0
    return reference if reference > 0 else 1.0


def crop_squares(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    angle_deg: float,
    step: float,
    size: int,
    factor: int = 1,
) -> np.ndarray:
    """Upright crops around centres, resampled by bilinear interpolation.

    Parameters
    ----------
    image
        ``(h, w)`` image, already block-averaged by ``factor`` (NaN-free).
    x, y
        ``(n,)`` centres in full-resolution pixels.
    angle_deg
        Lattice angle: the crop axes follow the lattice vectors.
    step
        Full-resolution pixels per crop pixel.
    size
        Crop side in pixels.
    factor
        Downsampling factor of ``image`` relative to full resolution.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float32; 0 outside the image.
    """
    from scipy.ndimage import map_coordinates

    t = np.deg2rad(angle_deg)
    offs = (np.arange(size) - (size - 1) / 2.0) * step
    vv, uu = np.meshgrid(offs, offs, indexing="ij")  # rows along b, columns along a
    dx = uu * np.cos(t) - vv * np.sin(t)
    dy = uu * np.sin(t) + vv * np.cos(t)
    # The stack, and the stack again as written out.
    check_memory("--size", f"{len(x)} squares of {size} x {size} px", 8.0 * len(x) * size**2)
    out = np.zeros((len(x), size, size), np.float32)
    for k in track(range(len(x)), desc="cropping squares", unit="square"):
        cols = (x[k] + dx + 0.5) / factor - 0.5
        rows = (y[k] + dy + 0.5) / factor - 0.5
        out[k] = map_coordinates(image, [rows, cols], order=1, mode="constant", cval=0.0)
    return out
