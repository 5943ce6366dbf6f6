"""Stitch atlas tiles into one montage with feathered overlaps and a pixel->stage affine.

Each tile is first divided by the beam's fall-off, estimated from all the tiles
(:mod:`cryoscout.atlas.flatfield`), so that a square's brightness does not depend
on where in its tile it was imaged. Each tile is placed at its (rounded) top-left
position from the metadata. Where tiles overlap, pixels are averaged with weights that
fall off linearly towards each tile's edge (its distance to the nearest edge), so seams
fade instead of showing the last tile written. Pixels no tile covers are NaN.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cryoscout.atlas.flatfield import MIN_TILES, bin_image, fit_flat_field, most_common
from cryoscout.errors import InputError
from cryoscout.io.atlas_source import AtlasSource, Montage, TileRecord
from cryoscout.io.validate import check_memory
from cryoscout.progress import track

_A_PER_UM = 1e4


@lru_cache(maxsize=8)
def feather_weights(height: int, width: int) -> np.ndarray:
    """Blending weights of a ``(height, width)`` tile: distance to the nearest edge.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` float32, 1 on the border pixels rising to about
        ``min(height, width) / 2`` in the centre; read-only (cached).
    """
    wy = np.minimum(np.arange(1, height + 1), np.arange(height, 0, -1)).astype(np.float32)
    wx = np.minimum(np.arange(1, width + 1), np.arange(width, 0, -1)).astype(np.float32)
    weights = np.minimum(wy[:, None], wx[None, :])
    weights.setflags(write=False)
    return weights


def tile_centre(tile: TileRecord) -> tuple[float, float]:
    """Centre of a tile in montage pixels (pixel ``i`` has coordinate ``i``)."""
    return tile.x_px + (tile.width - 1) / 2, tile.y_px + (tile.height - 1) / 2


def fit_px_to_stage(points_px: np.ndarray, points_um: np.ndarray) -> np.ndarray | None:
    """Least-squares affine from montage pixels to stage µm.

    Parameters
    ----------
    points_px
        ``(n, 2)`` ``(x, y)`` montage pixel positions.
    points_um
        ``(n, 2)`` stage positions in µm of the same points.

    Returns
    -------
    numpy.ndarray or None
        ``(2, 3)`` matrix ``A`` with ``[sx, sy] = A @ [x, y, 1]``. With points on a line
        (a one-row montage) a similarity transform (scale, rotation, shift) is fitted
        instead; ``None`` with fewer than 2 distinct points.
    """
    p = np.asarray(points_px, dtype=float).reshape(-1, 2)
    s = np.asarray(points_um, dtype=float).reshape(-1, 2)
    if len(p) >= 3:
        design = np.c_[p, np.ones(len(p))]
        if np.linalg.matrix_rank(design) == 3:
            coef, *_ = np.linalg.lstsq(design, s, rcond=None)
            return coef.T
    if len(np.unique(p, axis=0)) < 2:
        return None
    # Similarity: sx = a x - b y + tx, sy = b x + a y + ty.
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(p, s, strict=True):
        rows += [[x, -y, 1.0, 0.0], [y, x, 0.0, 1.0]]
        rhs += [u, v]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _stage_affine(source: AtlasSource) -> np.ndarray | None:
    tiles = [t for t in source.tiles if t.stage_x_um is not None and t.stage_y_um is not None]
    px = [tile_centre(t) for t in tiles]
    um = [(t.stage_x_um, t.stage_y_um) for t in tiles]
    if len(tiles) < 3:
        # EPU lists grid squares with both atlas pixels and stage positions: use them too.
        squares = [s for s in source.known_squares if s.stage_x_um is not None]
        px += [(s.x_px, s.y_px) for s in squares]
        um += [(s.stage_x_um, s.stage_y_um) for s in squares]
    if len(px) >= 2:
        return fit_px_to_stage(np.array(px), np.array(um))
    if len(px) == 1 and source.pixel_size_A:
        # One tile: assume stage x along columns and y along rows at the pixel size.
        scale = source.pixel_size_A / _A_PER_UM
        (cx, cy), (sx, sy) = px[0], um[0]
        return np.array([[scale, 0.0, sx - scale * cx], [0.0, scale, sy - scale * cy]])
    return None


def _fit_to_box(image: np.ndarray, tile: TileRecord) -> np.ndarray:
    """Resample a tile to its size on the montage (EPU places binned tiles)."""
    if image.shape == (tile.height, tile.width):
        return image
    from skimage.transform import resize

    return resize(
        image, (tile.height, tile.width), order=1, anti_aliasing=True, preserve_range=True
    ).astype(np.float32)


def _flat_field(source: AtlasSource, tiles: list[TileRecord]) -> np.ndarray | None:
    """The beam's fall-off over the most common tile box, from every tile of that box."""
    from cryoscout.io.atlas_reader import load_tile

    box = most_common([(t.height, t.width) for t in tiles])
    same = [t for t in tiles if (t.height, t.width) == box]
    if len(same) < MIN_TILES:  # fit_flat_field would refuse them: do not read them
        return None
    binned = [
        bin_image(_fit_to_box(load_tile(source, t), t))
        for t in track(same, desc="flat field", unit="tile")
    ]
    return fit_flat_field(binned, box)


def stitch(source: AtlasSource, flat_field: bool = True) -> Montage:
    """Stitch an atlas's tiles into one montage image.

    Parameters
    ----------
    source
        From :func:`cryoscout.io.atlas_reader.open_atlas`; every tile that names an
        image file must exist.
    flat_field
        Divide every tile by the illumination estimated from the tiles
        (:func:`~cryoscout.atlas.flatfield.fit_flat_field`; no change with fewer
        than :data:`~cryoscout.atlas.flatfield.MIN_TILES` tiles). The tiles are
        then read twice, binned the first time.

    Returns
    -------
    Montage
        ``image`` of ``source.montage_shape`` (float32; NaN where no tile is), the
        pixel size, and ``px_to_stage`` fitted by least squares from tile centres and
        their stage positions (EPU grid squares help when fewer than 3 tiles carry one;
        a single tile uses the pixel size); ``None`` without stage positions.

    Raises
    ------
    InputError
        No tile images, or a tile file the metadata names is missing or unreadable.

    Examples
    --------
    >>> montage = stitch(open_atlas("run/atlas"))  # doctest: +SKIP
    >>> montage.to_stage(1024.0, 512.0)  # doctest: +SKIP
    """
    from cryoscout.io.atlas_reader import load_tile

    tiles = [t for t in source.tiles if t.path is not None]
    if not tiles:
        raise InputError(source.path, "names no tile images: nothing to stitch")
    missing = source.missing_tiles()
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(missing[0].path, f"tile named by {source.path.name} is missing{more}")
    height, width = source.montage_shape
    # The image, the weights and the caller's copies: refuse before allocating.
    check_memory(source.path, f"stitching a {width} x {height} px montage", 16.0 * height * width)
    if source.format == "image" and len(tiles) == 1:
        image = load_tile(source, tiles[0])  # nothing to blend: skip the accumulators
        return Montage(image, source.pixel_size_A, _stage_affine(source))

    flat = _flat_field(source, tiles) if flat_field else None
    total = np.zeros((height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    for tile in track(tiles, desc="stitching", unit="tile"):
        image = _fit_to_box(load_tile(source, tile), tile)
        if flat is not None and image.shape == flat.shape:
            image = image / flat
        w = feather_weights(tile.height, tile.width)
        if not np.isfinite(image).all():  # e.g. a saturated float tile: ignore bad pixels
            w = np.where(np.isfinite(image), w, 0).astype(np.float32)
            image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
        x0, y0 = round(tile.x_px), round(tile.y_px)
        # Clip the tile to the montage (aligned coordinates may poke out by a pixel).
        ys, xs = max(0, -y0), max(0, -x0)
        ye, xe = min(tile.height, height - y0), min(tile.width, width - x0)
        if ye <= ys or xe <= xs:
            continue
        region = (slice(y0 + ys, y0 + ye), slice(x0 + xs, x0 + xe))
        wt = w[ys:ye, xs:xe]
        total[region] += image[ys:ye, xs:xe] * wt
        weight[region] += wt
    covered = weight > 0
    np.divide(total, weight, out=total, where=covered)
    total[~covered] = np.nan
    return Montage(total, source.pixel_size_A, _stage_affine(source))
