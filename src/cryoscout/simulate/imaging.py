"""How the microscope turns a grid into counts: Beer-Lambert, beam fall-off, noise, tiling."""

from __future__ import annotations

import numpy as np

#: Transmission of the copper mesh and rim: a few electrons scatter through.
COPPER_TRANSMISSION = 0.003


def beer_lambert(thickness_nm: np.ndarray | float, mean_free_path_nm: float) -> np.ndarray:
    """Fraction of the beam passing a layer unscattered: ``exp(-t / lambda)``.

    At atlas magnification the objective aperture removes inelastically and
    elastically scattered electrons, so a square's brightness falls off with
    ice thickness ``t`` over a mean free path ``lambda`` of about 400 nm at
    300 kV (about 320 nm at 200 kV).
    """
    return np.exp(-np.asarray(thickness_nm, dtype=np.float32) / np.float32(mean_free_path_nm))


def vignetting(shape: tuple[int, int], strength: float) -> np.ndarray:
    """Circular fall-off of the beam over one tile: 1 at the centre, ``1 - strength`` at corners.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` float32.
    """
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (w / 2)
    r2 = (x[None, :] ** 2 + y[:, None] ** 2) / 2  # 1 at the corners
    # a flat top with a steeper rim, as a condenser-limited beam gives
    return (1 - strength * r2**1.3).astype(np.float32)


def tile_layout(
    nx: int, ny: int, tile_size: int, overlap: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """Top-left corners of an ``nx`` x ``ny`` montage of square tiles.

    Returns
    -------
    positions : numpy.ndarray
        ``(ny * nx, 2)`` int ``(x, y)`` in montage pixels, row by row.
    shape : tuple of int
        ``(height, width)`` of the montage.
    """
    step = round(tile_size * (1 - overlap))
    ys, xs = np.meshgrid(np.arange(ny) * step, np.arange(nx) * step, indexing="ij")
    pos = np.column_stack([xs.ravel(), ys.ravel()]).astype(int)
    return pos, ((ny - 1) * step + tile_size, (nx - 1) * step + tile_size)


def expose(expected: np.ndarray, rng: np.random.Generator, read_noise: float = 1.0) -> np.ndarray:
    """Counting noise on an expected-counts image.

    Poisson where few electrons arrive (bars, thick ice); its normal limit
    where ten or more do, which is indistinguishable there and several times
    faster. A Gaussian read noise is added; counts are rounded and kept >= 0.

    Returns
    -------
    numpy.ndarray
        Float32 counts, same shape as ``expected``.
    """
    lam = np.asarray(expected, dtype=np.float32)
    out = rng.standard_normal(lam.shape, dtype=np.float32)
    out *= np.sqrt(lam + np.float32(read_noise**2))
    out += lam
    low = np.flatnonzero(lam < 10)
    if low.size:
        counts = rng.poisson(lam.ravel()[low]).astype(np.float32)
        if read_noise > 0:
            counts += np.float32(read_noise) * rng.standard_normal(low.size, dtype=np.float32)
        out.ravel()[low] = counts
    np.rint(out, out=out)
    np.maximum(out, 0, out=out)
    return out


def blend_tiles(
    tiles: list[np.ndarray], positions: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Stitch tiles into one image, feathering overlaps with linear ramps.

    Parameters
    ----------
    tiles
        ``(h, w)`` images.
    positions
        ``(n, 2)`` top-left ``(x, y)`` of each tile.
    shape
        ``(height, width)`` of the montage.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` float32; pixels no tile covers are 0.
    """
    acc = np.zeros(shape, dtype=np.float32)
    wsum = np.zeros(shape, dtype=np.float32)
    weights: dict[tuple[int, int], np.ndarray] = {}
    for tile, (x, y) in zip(tiles, positions, strict=True):
        h, w = tile.shape
        if (h, w) not in weights:  # ramps towards every edge; computed once per tile size
            ry = np.minimum(np.arange(h) + 1, h - np.arange(h)).astype(np.float32)
            rx = np.minimum(np.arange(w) + 1, w - np.arange(w)).astype(np.float32)
            weights[h, w] = np.minimum.outer(ry, rx)
        wt = weights[h, w]
        acc[y : y + h, x : x + w] += wt * tile
        wsum[y : y + h, x : x + w] += wt
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    return acc
