"""The beam's fall-off over an atlas tile, estimated from the tiles themselves, and removed.

At atlas magnification the illumination is brighter in the middle of each tile
than at its corners (a condenser-limited beam: tens of per cent). The same
fall-off multiplies every tile, so a square imaged near a tile's corner looks
as if it had thicker ice than the same square near the middle. That error is
larger than the difference between ice an operator wants (40-100 nm) and ice
too thin to hold particles (10-25 nm), which differ by only 5-8 % in
transmission, so it has to go before anyone reads ice thickness off an atlas.

The grid moves under the beam from tile to tile, so at a given position in the
tile some tiles show an open square and others a bar or the rim. A high
percentile over the tiles at each position picks the open squares; a smooth
surface (a polynomial in the tile's coordinates, fitted to its logarithm with
the dark outliers rejected) is the estimate. A real flat-field (gain) reference
taken on the microscope is better; this is for the atlases that come without.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Fewer tiles than this do not sample the grid at every tile position: no estimate.
MIN_TILES = 9
#: Binned tiles are at most this many pixels on a side (the fall-off is smooth).
BINNED_SIDE = 128
#: The estimate never divides a pixel by less than this (a corner with no signal).
FLOOR = 0.2


def bin_image(image: np.ndarray, side: int = BINNED_SIDE) -> np.ndarray:
    """Block means of ``image`` with blocks chosen so the result is at most ``side`` wide.

    Returns
    -------
    numpy.ndarray
        ``(h // k, w // k)`` float64 with ``k = ceil(max(h, w) / side)``; edge
        rows and columns that do not fill a block are dropped.
    """
    h, w = image.shape
    k = max(1, -(-max(h, w) // side))
    hb, wb = h // k, w // k
    x = np.asarray(image[: hb * k, : wb * k], dtype=np.float64)
    return x.reshape(hb, k, wb, k).mean(axis=(1, 3))


def most_common(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The tile shape most tiles share (the flat field is estimated for it); ``None`` if none."""
    return max(set(shapes), key=list(shapes).count) if shapes else None


def _powers(positions: np.ndarray, n_blocks: int, degree: int) -> np.ndarray:
    """``(degree + 1, len(positions))`` powers of block coordinates scaled to [-1, 1]."""
    u = (positions - (n_blocks - 1) / 2) / (n_blocks / 2)
    return u[None, :] ** np.arange(degree + 1)[:, None]


def _terms(degree: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of ``x**i * y**j``, total degree at most ``degree``."""
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def _surface(coef: np.ndarray, px: np.ndarray, py: np.ndarray, degree: int) -> np.ndarray:
    """``sum coef[t] * x**i * y**j`` on the grid of ``py`` rows and ``px`` columns."""
    out = np.zeros((py.shape[1], px.shape[1]))
    for c, (i, j) in zip(coef, _terms(degree), strict=True):
        out += c * np.outer(py[j], px[i])
    return out


def _percentile_over_tiles(stack: np.ndarray, q: float) -> np.ndarray:
    """``np.nanpercentile(stack, q, axis=0)`` (linear), in one sort rather than a loop per pixel.

    Non-finite values are ignored; a pixel with none finite is NaN.
    """
    x = np.where(np.isfinite(stack), stack, np.nan)
    ordered = np.sort(x, axis=0)  # NaN sorts last
    n = np.isfinite(x).sum(axis=0)
    pos = q / 100 * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    below = np.take_along_axis(ordered, lo[None], axis=0)[0]
    above = np.take_along_axis(ordered, hi[None], axis=0)[0]
    out = below + (pos - lo) * (above - below)
    return np.where(n > 0, out, np.nan)


def estimate_flat_field(
    tiles: Sequence[np.ndarray], percentile: float = 95.0, degree: int = 4
) -> np.ndarray | None:
    """The relative illumination over a tile, from the tiles of one atlas.

    Parameters
    ----------
    tiles
        The atlas's tiles, all of one shape (a tile of another shape is ignored),
        in counts or any unit proportional to the beam (an offset is not removed).
    percentile
        Per position, this percentile over the tiles stands for open squares.
    degree
        Degree of the smooth surface fitted to its logarithm.

    Returns
    -------
    numpy.ndarray or None
        ``(h, w)`` float32, 1 where the beam is brightest, never below
        :data:`FLOOR`; ``None`` with fewer than :data:`MIN_TILES` tiles of the
        common shape or no bright signal to fit.

    Examples
    --------
    >>> flat = estimate_flat_field(sim.tiles)  # doctest: +SKIP
    >>> corrected = [t / flat for t in sim.tiles]  # doctest: +SKIP
    """
    shapes = [np.shape(t) for t in tiles]
    shape = most_common(shapes)
    if shape is None or len(shape) != 2:
        return None
    binned = [bin_image(t) for t, s in zip(tiles, shapes, strict=True) if s == shape]
    return fit_flat_field(binned, shape, percentile, degree)


def fit_flat_field(
    binned: Sequence[np.ndarray],
    shape: tuple[int, int],
    percentile: float = 95.0,
    degree: int = 4,
) -> np.ndarray | None:
    """:func:`estimate_flat_field` from tiles already binned by :func:`bin_image`.

    Parameters
    ----------
    binned
        ``bin_image(tile)`` of every tile of ``shape`` (a stitcher bins each tile
        as it reads it, so that no more than one full tile is in memory).
    shape
        ``(h, w)`` of the tiles: the shape of the result.
    percentile, degree
        As for :func:`estimate_flat_field`.
    """
    if len(binned) < MIN_TILES:
        return None
    bright = _percentile_over_tiles(np.stack(binned), percentile)
    top = np.nanmax(bright) if np.isfinite(bright).any() else np.nan
    if not np.isfinite(top) or top <= 0:
        return None
    hb, wb = bright.shape
    px = _powers(np.arange(wb, dtype=np.float64), wb, degree)
    py = _powers(np.arange(hb, dtype=np.float64), hb, degree)
    design = np.stack([np.outer(py[j], px[i]).ravel() for i, j in _terms(degree)], axis=1)
    z = np.log(np.maximum(bright / top, 1e-6)).ravel()
    keep = np.isfinite(bright).ravel() & (bright.ravel() > 0.05 * top)
    if keep.sum() < 2 * design.shape[1]:
        return None
    for _ in range(6):  # bars and rims that no tile showed open are dark outliers
        coef, *_ = np.linalg.lstsq(design[keep], z[keep], rcond=None)
        resid = z - design @ coef
        spread = 1.4826 * np.median(np.abs(resid[keep]))
        new_keep = keep & (resid > -2.5 * spread)
        if new_keep.sum() < 2 * design.shape[1] or (new_keep == keep).all():
            break
        keep = new_keep
    # Evaluate at every pixel: pixel p lies at block coordinate (p + 0.5) / k - 0.5.
    k = max(1, -(-max(shape) // BINNED_SIDE))
    xs = (np.arange(shape[1]) + 0.5) / k - 0.5
    ys = (np.arange(shape[0]) + 0.5) / k - 0.5
    full = _surface(coef, _powers(xs, wb, degree), _powers(ys, hb, degree), degree)
    flat = np.exp(full - full.max())
    return np.maximum(flat, FLOOR).astype(np.float32)


def flatten_tiles(tiles: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Tiles divided by their :func:`estimate_flat_field` (unchanged when there is none).

    Returns
    -------
    tiles : list of numpy.ndarray
        float32 tiles; those of another shape than the estimate's are returned as they are.
    flat : numpy.ndarray or None
        The estimate used.
    """
    flat = estimate_flat_field(tiles)
    if flat is None:
        return [np.asarray(t, dtype=np.float32) for t in tiles], None
    out = [
        (np.asarray(t, dtype=np.float32) / flat) if np.shape(t) == flat.shape else t for t in tiles
    ]
    return out, flat
