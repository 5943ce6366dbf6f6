"""The edge of a grid's meshed area (the copper rim), found in the atlas itself.

A grid's bars span a disc (2.65 mm on a 3.05 mm grid); beyond it the copper
rim and the clip ring are opaque. Atlases at 500-700 nm/px show that rim, and a
square it cuts is partial even when the whole square was imaged.

The rim is found where it cuts square openings: inside the openings of the
fitted lattice, film (anything brighter than copper, thick ice included)
turns into copper. The meshed area is the film map with the bars closed and
the holes filled, so dark squares inside the grid (thick ice, contamination)
do not count; its boundary points that lie in an opening and face imaged
copper are fitted with a circle by trimmed least squares. The circle is kept
only when it looks like a rim: a radius of 3-60 pitches, points spread over
an arc, a small residual, and copper beyond it. Otherwise (a part of the grid
only, black padding, a big dark patch) there is no rim and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoscout.atlas.lattice import Lattice

# Film is brighter than this fraction of the way from copper to bright film: thick ice counts.
FILM_THRESHOLD = 0.1
# Plausible rim radius in lattice pitches (100-1000 mesh on a 2.65 mm meshed disc).
RADIUS_PITCHES = (3.0, 60.0)
# The circle must explain the boundary this well (RMS residual, pitches).
MAX_RMS_PITCHES = 0.12
# And be supported by points over at least this arc (degrees).
MIN_ARC_DEG = 25.0
# Beyond the circle at least this fraction of the imaged band must be copper.
MIN_COPPER_BEYOND = 0.85


@dataclass(frozen=True)
class Rim:
    """A circular edge of the meshed area, in full-resolution image pixels.

    Attributes
    ----------
    centre_xy
        ``(x, y)`` of the circle centre (may lie outside the image).
    radius_px
        Radius of the meshed disc.
    rms_px
        RMS distance of the supporting boundary points from the circle.
    n_points
        Number of supporting boundary points.
    """

    centre_xy: tuple[float, float]
    radius_px: float
    rms_px: float
    n_points: int

    def inside(self, x: np.ndarray, y: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
        """Whether points lie within the meshed disc (grown by ``margin_px``)."""
        d = np.hypot(
            np.asarray(x, float) - self.centre_xy[0], np.asarray(y, float) - self.centre_xy[1]
        )
        return d <= self.radius_px + margin_px


def find_rim(
    small: np.ndarray, coverage: np.ndarray, lattice: Lattice, scale: int = 1
) -> Rim | None:
    """Find the copper rim of the meshed area in an atlas, if the atlas shows it.

    Parameters
    ----------
    small
        ``(h, w)`` atlas block-averaged by ``scale``
        (:func:`cryoscout.atlas.lattice.block_mean`); NaN where nothing was imaged.
    coverage
        ``(h, w)`` fraction of imaged pixels in each block of ``bmap``.
    lattice
        Lattice in full-resolution pixels (pitch, angle, origin, bar width).
    scale
        Downsampling factor of ``bmap`` relative to full resolution.

    Returns
    -------
    Rim or None
        The rim in full-resolution pixels; ``None`` when the image shows no rim.
    """
    from scipy import ndimage

    from cryoscout.atlas.matching import render_lattice

    h, w = small.shape
    pitch = lattice.pitch_px / scale
    bar = max(lattice.bar_width_px / scale, 1.0)
    imaged = (coverage >= 0.5) & np.isfinite(small)
    values = np.where(imaged, small, np.nan)

    # Openings of the lattice, kept a pixel away from the bars.
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    ox, oy = lattice.origin_xy
    opening = render_lattice(
        gx - ((ox + 0.5) / scale - 0.5),
        gy - ((oy + 0.5) / scale - 0.5),
        pitch,
        bar,
        lattice.angle_deg,
    )
    opening = ndimage.minimum_filter(opening > 0.5, size=3)
    if not (opening & imaged).any():
        return None

    # Levels of our own: the lattice's film level is pulled down where half the
    # atlas is copper beyond the rim. Copper is the bar level, bright film a high
    # percentile of the openings.
    copper_level = float(lattice.bar_level)
    film_level = float(np.percentile(values[opening & imaged], 95))
    if not film_level > copper_level:
        return None
    film = imaged & (values > copper_level + FILM_THRESHOLD * (film_level - copper_level))

    # Meshed area: film with the bars between squares closed (a square structuring
    # element: separable max/min filters are fast), holes (dark squares) filled.
    k = 2 * (int(np.ceil(0.6 * bar)) + 1) + 1
    padded = np.pad(film.astype(np.uint8), k)
    closed = ndimage.minimum_filter(ndimage.maximum_filter(padded, size=k), size=k)
    closed = closed[k:-k, k:-k].astype(bool)
    labels, n = ndimage.label(closed)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mesh = ndimage.binary_fill_holes(labels == np.argmax(sizes))

    # Boundary points: meshed, in an opening, next to imaged non-meshed opening pixels.
    copper = opening & imaged & ~mesh
    near_copper = ndimage.maximum_filter(copper, size=3)
    edge = mesh & opening & near_copper
    py, px = np.nonzero(edge)
    if len(px) < 12:
        return None
    fit = _robust_circle(px.astype(float), py.astype(float), pitch)
    if fit is None:
        return None
    cx, cy, r, rms, used = fit
    if not RADIUS_PITCHES[0] * pitch <= r <= RADIUS_PITCHES[1] * pitch:
        return None
    if rms > MAX_RMS_PITCHES * pitch or used.sum() < 12:
        return None
    ang = np.arctan2(py[used] - cy, px[used] - cx)
    if _arc_span_deg(ang) < MIN_ARC_DEG:
        return None
    # Beyond the circle (within one pitch) the imaged openings must be copper.
    d = np.hypot(gx - cx, gy - cy)
    band = opening & imaged & (d > r + 0.15 * pitch) & (d < r + pitch)
    if band.sum() < 12 or np.mean(~film[band]) < MIN_COPPER_BEYOND:
        return None
    to_full = lambda v: (v + 0.5) * scale - 0.5  # noqa: E731 - block centres in full pixels
    # The points are centres of the last film blocks: the rim lies half a block further out.
    r += 0.5
    return Rim(
        (float(to_full(cx)), float(to_full(cy))),
        float(r * scale),
        float(rms * scale),
        int(used.sum()),
    )


def _robust_circle(
    x: np.ndarray, y: np.ndarray, pitch: float, rounds: int = 6
) -> tuple[float, float, float, float, np.ndarray] | None:
    """Circle by algebraic least squares, refitted on the points near the last fit.

    Points further than a quarter pitch (or three robust standard deviations)
    from the circle are dropped each round: dark squares at the rim and the
    corners of cut openings pull the boundary inwards.
    """
    used = np.ones(len(x), bool)
    fit = None
    for _ in range(rounds):
        if used.sum() < 12:
            return None
        xs, ys = x[used], y[used]
        mx, my = xs.mean(), ys.mean()  # centred for conditioning
        a = np.stack([xs - mx, ys - my, np.ones_like(xs)], axis=1)
        b = (xs - mx) ** 2 + (ys - my) ** 2
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        cx, cy = coef[0] / 2 + mx, coef[1] / 2 + my
        r2 = coef[2] + (coef[0] / 2) ** 2 + (coef[1] / 2) ** 2
        if r2 <= 0:
            return None
        r = float(np.sqrt(r2))
        res = np.hypot(x - cx, y - cy) - r
        mad = 1.4826 * np.median(np.abs(res[used]))
        new = np.abs(res) <= max(min(3 * mad, 0.25 * pitch), 1.0)
        fit = (float(cx), float(cy), r, float(np.sqrt(np.mean(res[new] ** 2))), new)
        if np.array_equal(new, used):
            break
        used = new
    return fit


def _arc_span_deg(angles: np.ndarray) -> float:
    """Angular extent of points on a circle: 360 minus the largest empty gap."""
    a = np.sort(np.mod(angles, 2 * np.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * np.pi]))
    return float(np.rad2deg(2 * np.pi - gaps.max()))
