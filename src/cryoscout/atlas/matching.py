"""Grid squares found by template matching, then regularised by the lattice.

As in XCryoNet, the template is built from the grid's own intensity distribution:
a patch of the bar lattice (rounded squares of side pitch - bar width, at the
lattice angle, film inside and bars outside) rendered at the levels measured
on the image. It is matched by FFT normalised cross-correlation
(:func:`skimage.feature.match_template`) on the soft bar map of the atlas, so
saturated broken squares and hole texture look like ordinary film. Peaks
(:func:`skimage.feature.peak_local_max`, at least 0.6 pitch apart) are refined
to sub-pixel positions, a lattice is fitted to the strong ones, and every
lattice node inside the imaged area becomes a square when a peak sits on it
or, where the correlation misses (broken, contaminated, partial squares),
when its centre is film rather than bar.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cryoscout.atlas.lattice import Lattice, bar_map, block_mean
from cryoscout.atlas.rim import Rim, find_rim

# Matching runs on the atlas downsampled so that one pitch is about this many pixels.
MATCH_PITCH_PX = 28.0
# Strong peaks (NCC above this) define the lattice fit.
FIT_MIN_NCC = 0.5
# A peak within this fraction of the pitch of a node belongs to that node.
ASSIGN_RADIUS = 0.3
# A peak further than this fraction of the pitch from its fitted node is distrusted
# (partial or damaged squares pull the correlation peak); the node is used instead.
KEEP_PEAK_RADIUS = 0.08


@dataclass
class SquareDetections:
    """Grid squares found in an atlas, in full-resolution montage pixels.

    Attributes
    ----------
    x_px, y_px
        ``(n,)`` square centres (x = column, y = row).
    ncc
        ``(n,)`` normalised cross-correlation with the template at the centre.
    full
        ``(n,)`` bool: the square's opening lies wholly inside the imaged area and,
        where the atlas shows the copper rim of the grid, inside the meshed area.
    from_peak
        ``(n,)`` bool: a correlation peak sat on the node (False: filled from the lattice).
    lattice
        The lattice refined on the detected squares.
    rim
        The edge of the meshed area (:func:`cryoscout.atlas.rim.find_rim`), or
        ``None`` when the atlas does not show it.
    """

    x_px: np.ndarray
    y_px: np.ndarray
    ncc: np.ndarray
    full: np.ndarray
    from_peak: np.ndarray
    lattice: Lattice
    rim: Rim | None = None


def render_template(lattice: Lattice, scale: float = 1.0) -> np.ndarray:
    """A patch of the bar lattice centred on a square, 0 on bars and 1 on film.

    Parameters
    ----------
    lattice
        Pitch, angle and bar width in full-resolution pixels.
    scale
        Downsampling factor of the image the template will be matched on.

    Returns
    -------
    numpy.ndarray
        ``(m, m)`` float32, ``m`` odd and about 1.2 pitches, so the template holds
        one whole square and the bars around it.
    """
    pitch = lattice.pitch_px / scale
    bar = max(lattice.bar_width_px / scale, 1.0)
    half_size = int(np.ceil(0.6 * pitch))
    yy, xx = np.mgrid[-half_size : half_size + 1, -half_size : half_size + 1].astype(float)
    return render_lattice(xx, yy, pitch, bar, lattice.angle_deg)


def render_lattice(
    dx: np.ndarray, dy: np.ndarray, pitch: float, bar: float, angle_deg: float
) -> np.ndarray:
    """Soft film map (1 film, 0 bar) of a lattice with a node at ``(0, 0)``.

    Squares have rounded corners (radius 12% of the side), as real grids do;
    edges are anti-aliased over one pixel.
    """
    t = np.deg2rad(angle_deg)
    u = (dx * np.cos(t) + dy * np.sin(t)) / pitch
    v = (-dx * np.sin(t) + dy * np.cos(t)) / pitch
    fu = np.abs(u - np.round(u)) * pitch
    fv = np.abs(v - np.round(v)) * pitch
    half = 0.5 * (pitch - bar)
    r = 0.12 * (pitch - bar)
    qx, qy = fu - (half - r), fv - (half - r)
    # Signed distance to a rounded square (negative inside).
    sd = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
    return np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)


def find_squares(image: np.ndarray, lattice: Lattice) -> SquareDetections:
    """Find every grid square of an atlas.

    Parameters
    ----------
    image
        ``(h, w)`` stitched atlas, NaN where no tile covered.
    lattice
        First estimate from :func:`cryoscout.atlas.lattice.estimate_lattice`.

    Returns
    -------
    SquareDetections
        One entry per lattice node whose centre is inside the imaged area and is
        a square (a correlation peak, or film rather than bar at the centre).
    """
    from skimage.feature import match_template, peak_local_max

    image = np.asarray(image)
    g = max(1, int(lattice.pitch_px // MATCH_PITCH_PX))
    small, coverage = block_mean(image, g)
    bmap = np.nan_to_num(bar_map(small, lattice.bar_level, lattice.film_level), nan=0.0)
    bmap[coverage < 0.5] = 0.0  # unimaged looks like bar: it holds no square
    template = render_template(lattice, scale=g)
    ncc = match_template(bmap, template, pad_input=True, mode="constant", constant_values=0.0)
    ncc = np.nan_to_num(ncc, nan=0.0)
    pitch_g = lattice.pitch_px / g
    peaks = peak_local_max(
        ncc, min_distance=max(1, int(0.6 * pitch_g)), threshold_abs=0.2, exclude_border=False
    )
    px, py, pv = _subpixel(ncc, peaks)
    # Block centres in full-resolution pixels.
    px, py = (px + 0.5) * g - 0.5, (py + 0.5) * g - 0.5

    fitted = fit_lattice(px[pv >= FIT_MIN_NCC], py[pv >= FIT_MIN_NCC], lattice)
    h, w = image.shape
    ni, nj = _node_grid(fitted, w, h)
    nx, ny = fitted.to_xy(ni, nj)
    inside = (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)
    ni, nj, nx, ny = ni[inside], nj[inside], nx[inside], ny[inside]

    # Assign each peak to its nearest node (one peak per node: the strongest).
    best_peak = np.full(nx.shape, -1)
    if len(px):
        fi, fj = fitted.to_indices(px, py)
        ri, rj = np.round(fi), np.round(fj)
        near = np.hypot(fi - ri, fj - rj) < ASSIGN_RADIUS
        lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(ni, nj, strict=True))}
        for p in np.argsort(-pv):
            if not near[p]:
                continue
            k = lookup.get((int(ri[p]), int(rj[p])))
            if k is not None and best_peak[k] < 0:
                best_peak[k] = p

    xs, ys, scores, from_peak = [], [], [], []
    centre_half = max(1, int(0.25 * pitch_g))
    for k in range(len(nx)):
        gx, gy = round((nx[k] + 0.5) / g - 0.5), round((ny[k] + 0.5) / g - 0.5)
        gx, gy = min(max(gx, 0), bmap.shape[1] - 1), min(max(gy, 0), bmap.shape[0] - 1)
        if coverage[gy, gx] < 0.5:
            continue  # the centre was not imaged: nothing to crop
        p = best_peak[k]
        if p >= 0:
            off = np.hypot(px[p] - nx[k], py[p] - ny[k]) / fitted.pitch_px
            x, y = (px[p], py[p]) if off < KEEP_PEAK_RADIUS else (nx[k], ny[k])
            xs.append(x)
            ys.append(y)
            scores.append(pv[p])
            from_peak.append(True)
            continue
        # No peak: keep the node when its centre is mostly film (broken, dirty square),
        # not bar (the grid rim, bent bars, the copper beyond the grid).
        box = bmap[
            max(gy - centre_half, 0) : gy + centre_half + 1,
            max(gx - centre_half, 0) : gx + centre_half + 1,
        ]
        if np.mean(box > 0.5) >= 0.3:
            xs.append(nx[k])
            ys.append(ny[k])
            scores.append(float(ncc[gy, gx]))
            from_peak.append(False)

    xs_a, ys_a = np.asarray(xs, float), np.asarray(ys, float)
    full = footprint_inside(image, xs_a, ys_a, fitted)
    # Squares cut by the copper rim of the grid are partial too, however well imaged.
    rim = find_rim(small, coverage, fitted, scale=g)
    if rim is not None and len(xs_a):
        full &= footprint_within_rim(xs_a, ys_a, fitted, rim)
    return SquareDetections(
        x_px=xs_a,
        y_px=ys_a,
        ncc=np.asarray(scores, float),
        full=full,
        from_peak=np.asarray(from_peak, bool),
        lattice=fitted,
        rim=rim,
    )


def fit_lattice(x: np.ndarray, y: np.ndarray, lattice: Lattice, rounds: int = 3) -> Lattice:
    """Refine a lattice on square centres by least squares (x = o + i a + j b).

    Centres further than 0.3 pitch from a node of the current estimate are left
    out of each round. With fewer than 4 usable centres the input is returned.

    Parameters
    ----------
    x, y
        ``(n,)`` square centres in pixels.
    lattice
        Starting estimate.

    Returns
    -------
    Lattice
        Same bar width and levels, refined pitch, angle and origin.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    current = lattice
    for _ in range(rounds):
        if len(x) < 4:
            return current
        fi, fj = current.to_indices(x, y)
        ri, rj = np.round(fi), np.round(fj)
        ok = np.hypot(fi - ri, fj - rj) < ASSIGN_RADIUS
        if ok.sum() < 4 or np.linalg.matrix_rank(np.stack([ri[ok], rj[ok]])) < 2:
            return current
        design = np.stack([np.ones(ok.sum()), ri[ok], rj[ok]], axis=1)
        coef, *_ = np.linalg.lstsq(design, np.stack([x[ok], y[ok]], axis=1), rcond=None)
        origin, a, b = coef[0], coef[1], coef[2]
        pitch = 0.5 * (np.hypot(*a) + np.hypot(*b))
        # Angle of a, and of b turned back by 90 degrees: averaged (equal on a square grid).
        ang_a = np.arctan2(a[1], a[0])
        ang_b = np.arctan2(-b[0], b[1])
        diff = np.angle(np.exp(1j * (ang_b - ang_a)))
        angle = float(np.rad2deg(ang_a + diff / 2)) % 90.0
        if angle > 90.0 - 1e-3:
            angle = 0.0
        current = replace(
            current,
            pitch_px=float(pitch),
            angle_deg=angle,
            origin_xy=(float(origin[0]), float(origin[1])),
        )
    return current


def footprint_inside(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, lattice: Lattice
) -> np.ndarray:
    """Whether each square's footprint lies wholly inside the image and its finite pixels.

    The footprint is the open square (side pitch - bar width, at the lattice angle),
    checked at points along its outline, one pixel inside.
    """
    h, w = image.shape
    half = max(0.5 * lattice.square_side_px - 1.0, 1.0)
    t = np.linspace(-1.0, 1.0, 9)
    ones = np.ones_like(t)
    # Outline of the axis-aligned unit square, then rotated and scaled.
    ou = np.concatenate([t, t, -ones, ones]) * half
    ov = np.concatenate([-ones, ones, t, t]) * half
    th = np.deg2rad(lattice.angle_deg)
    ox = ou * np.cos(th) - ov * np.sin(th)
    oy = ou * np.sin(th) + ov * np.cos(th)
    px = np.asarray(x, float)[:, None] + ox[None, :]
    py = np.asarray(y, float)[:, None] + oy[None, :]
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    xi = np.clip(np.round(px).astype(int), 0, w - 1)
    yi = np.clip(np.round(py).astype(int), 0, h - 1)
    finite = np.isfinite(image[yi, xi])
    return np.all(inside & finite, axis=1)


def footprint_within_rim(x: np.ndarray, y: np.ndarray, lattice: Lattice, rim: Rim) -> np.ndarray:
    """Whether each square's opening lies wholly inside the meshed disc.

    The opening (side pitch - bar width at the lattice angle, corners rounded by
    a tenth of the side as on real grids) is checked at points along its outline.
    """
    side = lattice.square_side_px
    half, rc = 0.5 * side, 0.1 * side
    t = np.linspace(-1.0, 1.0, 9) * (half - rc)
    ones = np.full_like(t, half)
    arc = np.linspace(0.0, 0.5 * np.pi, 7)
    ou = [t, t, -ones, ones]
    ov = [-ones, ones, t, t]
    for su in (-1, 1):
        for sv in (-1, 1):
            ou.append(su * (half - rc + rc * np.cos(arc)))
            ov.append(sv * (half - rc + rc * np.sin(arc)))
    ou, ov = np.concatenate(ou), np.concatenate(ov)
    th = np.deg2rad(lattice.angle_deg)
    ox = ou * np.cos(th) - ov * np.sin(th)
    oy = ou * np.sin(th) + ov * np.cos(th)
    px = np.asarray(x, float)[:, None] + ox[None, :]
    py = np.asarray(y, float)[:, None] + oy[None, :]
    return np.all(rim.inside(px, py), axis=1)


def _node_grid(lattice: Lattice, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of every lattice node whose centre could fall inside a ``w`` x ``h`` image."""
    ci, cj = lattice.to_indices(np.array([0, w - 1, 0, w - 1]), np.array([0, 0, h - 1, h - 1]))
    i_range = np.arange(np.floor(ci.min()) - 1, np.ceil(ci.max()) + 2)
    j_range = np.arange(np.floor(cj.min()) - 1, np.ceil(cj.max()) + 2)
    ii, jj = np.meshgrid(i_range, j_range, indexing="ij")
    return ii.ravel(), jj.ravel()


def _subpixel(ncc: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel peak positions (separable parabola fits) and their NCC values."""
    h, w = ncc.shape
    xs, ys, vals = [], [], []
    for r, c in peaks:
        dx = dy = 0.0
        if 0 < c < w - 1:
            lo, mid, hi = ncc[r, c - 1], ncc[r, c], ncc[r, c + 1]
            den = lo - 2 * mid + hi
            dx = 0.0 if den >= 0 else float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))
        if 0 < r < h - 1:
            lo, mid, hi = ncc[r - 1, c], ncc[r, c], ncc[r + 1, c]
            den = lo - 2 * mid + hi
            dy = 0.0 if den >= 0 else float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))
        xs.append(c + dx)
        ys.append(r + dy)
        vals.append(float(ncc[r, c]))
    return np.asarray(xs, float), np.asarray(ys, float), np.asarray(vals, float)
