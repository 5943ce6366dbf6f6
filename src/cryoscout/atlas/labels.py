"""Automatic brightness and squareness labels of extracted squares, as in XCryoNet.

brightness
    The mean of the non-zero pixels of the square's opening (bars excluded by the
    lattice geometry; zero marks pixels no tile imaged), scaled linearly to 0-4.
squareness
    Canny edges (:func:`skimage.feature.canny`); the largest edge-enclosed region
    that does not reach the crop border (the film between the bars, holes from
    contamination filled) divided by the area of its minimum-area enclosing
    square, scaled linearly to 0-4. A square that lost part of its film, or is
    partly covered by a bent bar, encloses a smaller, less square region.

Calibration
-----------
The linear maps from the raw measures to the 0-4 scale were fitted by least
squares against the simulator's truth (``brightness_value`` and
``squareness_value`` of :func:`cryoscout.simulate.atlas.simulate_atlas`) on the
full squares (n = 2108) of the 12 atlases of ``python benchmarks/extraction.py
--calibrate`` (3x3 tiles of 768 px; mesh 200/300/400; pixel sizes 150-700 nm;
rotations 0-90 degrees; default defect rates; seeds 100-111). The agreement on
other atlases is in ``benchmarks/results/extraction.md``. Squareness agrees less
well than brightness: a wholly broken square is a perfect bright square to the
edges, and vignetting moves the saturation level, so the least-squares slope is
shallow (raw 0.1 maps to 1.6, not 0).
"""

from __future__ import annotations

import numpy as np

# score = clip(offset + slope * raw, 0, 4); see the module docstring for how they were fitted.
BRIGHTNESS_CALIBRATION = (-1.355, 5.567)
SQUARENESS_CALIBRATION = (1.338, 2.804)
# Squareness is measured on crops reduced to about this size: as good as 64 px against
# the simulator truth (r 0.56 on seed 3), at half the time; 32 px loses agreement (r 0.50).
SQUARENESS_SIZE = 42


def opening_mask(size: int, side_px: float, margin: float = 0.1) -> np.ndarray:
    """Boolean mask of the centred, upright opening of a square crop.

    Parameters
    ----------
    size
        Crop side in pixels.
    side_px
        Side of the opening (pitch - bar width) in crop pixels.
    margin
        Fraction of the side left out at each edge, away from the bar edges.
    """
    c = (size - 1) / 2.0
    half = 0.5 * side_px * (1.0 - 2.0 * margin)
    yy, xx = np.mgrid[0:size, 0:size]
    return (np.abs(xx - c) <= half) & (np.abs(yy - c) <= half)


def brightness_raw(stack: np.ndarray, side_px: float) -> np.ndarray:
    """Mean of the non-zero pixels inside each square's opening.

    Parameters
    ----------
    stack
        ``(n, size, size)`` upright squares, intensities relative to the atlas
        reference level; 0 where nothing was imaged.
    side_px
        Side of the opening in crop pixels.

    Returns
    -------
    numpy.ndarray
        ``(n,)``; NaN where the opening has no imaged pixel.
    """
    stack = np.asarray(stack, dtype=np.float32)
    mask = opening_mask(stack.shape[-1], side_px)
    vals = stack[:, mask]
    nonzero = vals != 0
    count = nonzero.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (vals * nonzero).sum(axis=1) / count, np.nan)


def squareness_raw(crop: np.ndarray, saturation: float = 0.9, sigma: float | None = None) -> float:
    """Intact edge-enclosed film area over the area of the opening's minimum enclosing square.

    Canny edges split the crop into regions; those that do not reach the crop
    border (the bars do) make up the opening, its holes (contamination) filled.
    Its pixels at or above ``saturation`` are film that is gone (broken: the
    beam passes unattenuated) and do not count.

    Parameters
    ----------
    crop
        ``(size, size)`` one upright square with the bars around it, in units of
        the atlas reference intensity (1 = the brightest film or vacuum).
    saturation
        Relative intensity from which a pixel counts as broken film.
    sigma
        Canny smoothing in pixels; default ``size / 64`` (smooths hole texture away).

    Returns
    -------
    float
        In [0, 1]: about 0.95 for an intact rounded square, 0 when no closed
        region is found.
    """
    from scipy import ndimage
    from skimage.feature import canny

    crop = np.asarray(crop, dtype=np.float64)
    if crop.shape[0] >= 2 * SQUARENESS_SIZE:
        # Shape needs no more than ~42 pixels across; Canny's cost grows with the area.
        from skimage.transform import downscale_local_mean

        f = crop.shape[0] // SQUARENESS_SIZE
        crop = downscale_local_mean(crop, (f, f))
        sigma = None if sigma is None else sigma / f
    size = crop.shape[0]
    sigma = size / 64.0 if sigma is None else sigma
    edges = canny(crop, sigma=sigma)
    # Close one-pixel gaps in the edge chains so regions do not leak into the bars.
    walls = ndimage.binary_dilation(edges)
    labels, n = ndimage.label(~walls)
    if n == 0:
        return 0.0
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    areas[0] = 0
    areas[border] = 0
    keep = areas >= 0.01 * size * size
    if not keep.any():
        return 0.0
    region = ndimage.binary_fill_holes(keep[labels])
    # Give back the pixel the dilation took on each side, so an intact square scores ~1.
    region = ndimage.binary_dilation(region, iterations=2)
    intact = region & (ndimage.uniform_filter(crop, 3) < saturation)
    return float(min(intact.sum() / _min_enclosing_square_area(region), 1.0))


def _min_enclosing_square_area(region: np.ndarray) -> float:
    """Area of the smallest square (any rotation) enclosing a pixel region."""
    from scipy.spatial import ConvexHull, QhullError

    # The hull of the region is the hull of each row's first and last pixel corners.
    rows = np.flatnonzero(region.any(axis=1))
    first = np.argmax(region[rows], axis=1)
    last = region.shape[1] - 1 - np.argmax(region[rows, ::-1], axis=1)
    xs = np.concatenate([first - 0.5, last + 0.5, first - 0.5, last + 0.5])
    ys = np.concatenate([rows - 0.5, rows - 0.5, rows + 0.5, rows + 0.5])
    pts = np.stack([xs, ys], axis=1)
    try:
        pts = pts[ConvexHull(pts).vertices]
    except QhullError:
        pass
    angles = np.deg2rad(np.arange(0.0, 90.0, 1.0))
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u = pts[:, 0][None, :] * c + pts[:, 1][None, :] * s
    v = -pts[:, 0][None, :] * s + pts[:, 1][None, :] * c
    side = np.maximum(np.ptp(u, axis=1), np.ptp(v, axis=1))
    return float(np.min(side) ** 2)


def to_score(raw: np.ndarray, calibration: tuple[float, float]) -> np.ndarray:
    """Map raw measures to the 0-4 scale: ``clip(offset + slope * raw, 0, 4)``; NaN stays NaN."""
    offset, slope = calibration
    return np.clip(offset + slope * np.asarray(raw, float), 0.0, 4.0)


def automatic_labels(stack: np.ndarray, side_px: float) -> dict[str, np.ndarray]:
    """Brightness and squareness (0-4) of every square of a stack.

    Parameters
    ----------
    stack
        ``(n, size, size)`` upright squares as :func:`cryoscout.atlas.extract.extract_squares`
        makes them (relative intensities, 0 where not imaged).
    side_px
        Side of the opening in crop pixels.

    Returns
    -------
    dict
        ``"brightness"`` and ``"squareness"``: ``(n,)`` float arrays on 0-4.
    """
    stack = np.asarray(stack)
    b = to_score(brightness_raw(stack, side_px), BRIGHTNESS_CALIBRATION)
    s = np.array([squareness_raw(c) for c in stack], dtype=float)
    return {"brightness": b, "squareness": to_score(s, SQUARENESS_CALIBRATION)}
