"""The grid-bar lattice (pitch, angle, phase, bar width) estimated from an atlas image.

The grid bars are the strongest periodic structure of a low-magnification
atlas. The image is first reduced to a soft "bar map" (bars 0, film 1), which
removes what would otherwise compete with the bars: hole texture (brighter
than the film's mid level, clipped away), saturated broken squares (clipped to
film), vignetting and thickness gradients (film stays 1 while it is brighter
than the mid level). The autocorrelation of that map (by FFT, normalised by
the overlap of the imaged area so unimaged regions do not bias it) peaks at
every lattice vector; unlike the power spectrum it has no harmonics, so the
shortest vector whose perpendicular partner and diagonals also peak is the
pitch, and far peaks refine it to a small fraction of a pixel. The phases of
the two fundamental Fourier components place a node. Nothing here needs the
pixel size; when it is known, a pitch outside the standard meshes only raises
a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cryoscout.errors import InputError

# Grid pitches in µm that occur in practice (100 to 600 mesh); 200/300/400 mesh
# are 125/83/62 µm. A plausibility check only (a warning), never a requirement.
PLAUSIBLE_PITCH_UM = (35.0, 300.0)
# Largest side of the image the spectrum is computed on (speed vs finest pitch).
ANALYSIS_SIZE = 1024
# Harmonics (m, n) of the fundamental pair that a square bar lattice shows.
_HARMONICS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2))
# Minimum mean autocorrelation at a, b, a+b, a-b for "there is a lattice".
_MIN_LATTICE_SCORE = 0.3


@dataclass(frozen=True)
class Lattice:
    """A square lattice of grid squares in image pixels.

    Attributes
    ----------
    pitch_px
        Centre-to-centre distance of neighbouring squares.
    angle_deg
        Angle of the first lattice vector from the +x axis (x = column, y = row,
        so positive angles turn towards +y), in [0, 90).
    origin_xy
        ``(x, y)`` of one lattice node (a square centre).
    bar_width_px
        Width of the grid bars.
    bar_level, film_level
        Typical intensity on the bars and inside squares (image units).
    score
        Mean normalised autocorrelation at the lattice vectors (1 = perfect lattice).
    """

    pitch_px: float
    angle_deg: float
    origin_xy: tuple[float, float] = (0.0, 0.0)
    bar_width_px: float = 0.0
    bar_level: float = 0.0
    film_level: float = 1.0
    score: float = float("nan")

    @property
    def basis(self) -> np.ndarray:
        """``(2, 2)`` matrix whose columns are the lattice vectors a and b (x, y)."""
        t = np.deg2rad(self.angle_deg)
        c, s = np.cos(t), np.sin(t)
        return self.pitch_px * np.array([[c, -s], [s, c]])

    @property
    def square_side_px(self) -> float:
        """Side of the open square between the bars."""
        return self.pitch_px - self.bar_width_px

    def to_indices(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional lattice indices ``(i, j)`` of image positions."""
        x0, y0 = self.origin_xy
        d = np.stack([np.asarray(x, float) - x0, np.asarray(y, float) - y0])
        ij = np.linalg.solve(self.basis, d.reshape(2, -1)).reshape(d.shape)
        return ij[0], ij[1]

    def to_xy(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image positions ``(x, y)`` of lattice indices."""
        b = self.basis
        i = np.asarray(i, float)
        j = np.asarray(j, float)
        return (
            self.origin_xy[0] + b[0, 0] * i + b[0, 1] * j,
            self.origin_xy[1] + b[1, 0] * i + b[1, 1] * j,
        )


def block_mean(image: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Downsample by an integer factor, averaging only the finite pixels.

    Parameters
    ----------
    image
        ``(h, w)`` image; NaN marks pixels no tile covered.
    factor
        Block side in pixels (1 returns a copy).

    Returns
    -------
    small : numpy.ndarray
        ``(ceil(h / factor), ceil(w / factor))`` float32; NaN where a block had no finite pixel.
    coverage : numpy.ndarray
        Fraction of finite pixels in each block.
    """
    img = np.asarray(image, dtype=np.float32)
    valid = np.isfinite(img)
    if factor <= 1:
        return np.where(valid, img, np.nan).astype(np.float32), valid.astype(np.float32)
    h, w = img.shape
    hh, ww = -(-h // factor) * factor, -(-w // factor) * factor
    vals = np.zeros((hh, ww), np.float32)
    cnt = np.zeros((hh, ww), np.float32)
    vals[:h, :w] = np.where(valid, img, 0.0)
    cnt[:h, :w] = valid
    shape = (hh // factor, factor, ww // factor, factor)
    s = vals.reshape(shape).sum(axis=(1, 3))
    n = cnt.reshape(shape).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        small = np.where(n > 0, s / np.maximum(n, 1), np.nan).astype(np.float32)
    # Coverage is relative to the blocks' full size; edge blocks past the image count as empty.
    return small, n / float(factor * factor)


def intensity_levels(values: np.ndarray) -> tuple[float, float]:
    """Bar and film intensity levels of an atlas from its finite pixel values.

    Bars (copper) are the darkest large population and film the bright one; Otsu's
    threshold separates them, and each level is the median of its side, so a few
    saturated or contaminated squares do not move them.

    Returns
    -------
    bar_level, film_level : float
    """
    from skimage.filters import threshold_otsu

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 16 or np.ptp(v) <= 0:
        raise InputError(None, "no grid lattice found (the image is empty or flat)")
    if v.size > 400_000:  # percentiles of a subsample are as good and much faster
        v = v[:: v.size // 400_000 + 1]
    t = threshold_otsu(v)
    lo, hi = v[v <= t], v[v > t]
    return float(np.median(lo)), float(np.median(hi))


def bar_map(image: np.ndarray, bar_level: float, film_level: float) -> np.ndarray:
    """Soft map with bars at 0 and film at 1; NaN stays NaN.

    Everything brighter than the mid level between bars and film is clipped to 1,
    so hole texture, saturated broken squares and vignetting do not show.
    """
    mid = bar_level + 0.5 * (film_level - bar_level)
    return np.clip((image - bar_level) / max(mid - bar_level, 1e-12), 0.0, 1.0).astype(np.float32)


def estimate_lattice(image: np.ndarray, pixel_size_A: float | None = None) -> Lattice:
    """Estimate the grid-square lattice of an atlas image from the image alone.

    Parameters
    ----------
    image
        ``(h, w)`` stitched atlas; NaN where no tile covered.
    pixel_size_A
        Pixel size in Å when known; only used to warn when the pitch found is
        one no real grid has (outside 35-300 µm). The image decides.

    Returns
    -------
    Lattice
        Pitch, angle, one node, bar width and intensity levels, in pixels of ``image``.

    Raises
    ------
    cryoscout.errors.InputError
        When the image shows no periodic grid (``"no grid lattice found"``).

    Examples
    --------
    >>> lat = estimate_lattice(montage.image, montage.pixel_size_A)  # doctest: +SKIP
    >>> lat.pitch_px, lat.angle_deg  # doctest: +SKIP
    (143.2, 44.7)
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(None, f"expected a 2D atlas image, got shape {image.shape}")
    factor = max(1, int(np.ceil(max(image.shape) / ANALYSIS_SIZE)))
    small, coverage = block_mean(image, factor)
    valid = coverage > 0.5
    if valid.sum() < 64:
        raise InputError(None, "no grid lattice found (the image has almost no data)")
    bar_level, film_level = intensity_levels(small[valid])
    bmap = bar_map(small, bar_level, film_level)
    mean = float(bmap[valid].mean())
    centred = np.where(valid, bmap - mean, 0.0)

    h, w = small.shape
    try:
        acf = _normalised_acf(centred, valid)
        a_vec, score = _lattice_vector(acf, min(h, w), factor, pixel_size_A)
    except InputError as exc:
        seen = describe_image(bmap, valid, factor, pixel_size_A)
        raise InputError(exc.path, f"{exc.problem}: {seen}" if seen else exc.problem) from None
    a_vec = _refine_vector(acf, a_vec)
    pitch_small = float(np.hypot(*a_vec))
    angle = float(np.rad2deg(np.arctan2(a_vec[1], a_vec[0]))) % 90.0
    if angle > 90.0 - 1e-3:  # -0.0001 degrees wraps to 89.9999; call it 0
        angle = 0.0

    # The phases of the two fundamentals put a node (film maximum) at x0, solving
    # k . x0 = -phase / 2pi for the reciprocal vectors k = a / |a|^2 and its perpendicular.
    k = a_vec / pitch_small**2
    kp = np.array([-k[1], k[0]])
    yy, xx = np.mgrid[0:h, 0:w]
    phases = []
    for vec in (k, kp):
        f = np.sum(centred * np.exp(-2j * np.pi * (vec[0] * xx + vec[1] * yy)))
        phases.append(-np.angle(f) / (2 * np.pi))
    x0_small = np.linalg.solve(np.stack([k, kp]), np.array(phases))

    # Report the node nearest the image centre (any node is equally valid).
    lat_small = Lattice(pitch_small, angle, (float(x0_small[0]), float(x0_small[1])))
    i, j = lat_small.to_indices(np.array(w / 2), np.array(h / 2))
    cx, cy = lat_small.to_xy(np.round(i), np.round(j))
    lat_small = Lattice(pitch_small, angle, (float(cx), float(cy)))

    bar_frac, bar_lv, film_lv = _fold_cell(small, bmap, valid, lat_small)
    to_full = lambda v: (v + 0.5) * factor - 0.5  # noqa: E731 - block centres in full pixels
    pitch = pitch_small * factor
    return Lattice(
        pitch_px=float(pitch),
        angle_deg=angle,
        origin_xy=(float(to_full(cx)), float(to_full(cy))),
        bar_width_px=float(bar_frac * pitch),
        bar_level=bar_lv,
        film_level=film_lv,
        score=score,
    )


def describe_image(
    bmap: np.ndarray, valid: np.ndarray, factor: int, pixel_size_A: float | None
) -> str:
    """What an image without a grid lattice shows, in words for the error message.

    Parameters
    ----------
    bmap, valid
        The reduced image's bar map (bars 0, film 1) and where it holds data.
    factor
        Reduction factor of the map (pixels of the image per map pixel).
    pixel_size_A
        Pixel size of the image in Å, when known.

    Returns
    -------
    str
        E.g. "one opening fills 61% of the image: it looks like a single grid square
        at higher magnification, not an atlas"; empty when nothing useful can be said.
    """
    from scipy import ndimage
    from skimage.measure import label, regionprops

    film = (bmap > 0.5) & valid
    labels = label(film, connectivity=1)
    areas = np.bincount(labels.ravel())[1:]
    n_valid = max(int(valid.sum()), 1)
    said = []
    if len(areas):
        # One compact, convex bright opening with bars around it is a grid square seen
        # up close; noise or a natural image gives ragged regions (perimeter >> 4 sqrt(A)).
        biggest = ndimage.binary_fill_holes(labels == np.argmax(areas) + 1)  # contamination
        region = regionprops(biggest.astype(np.uint8))[0]
        others = np.sort(areas)[-2] if len(areas) > 1 else 0
        if (
            0.2 < region.area / n_valid < 0.9
            and others < 0.2 * region.area
            and region.solidity > 0.9
            and region.perimeter < 6 * np.sqrt(region.area)
        ):
            said.append(
                f"one opening fills {region.area / n_valid:.0%} of the image: it looks like a "
                "single grid square at higher magnification, not an atlas"
            )
    if pixel_size_A:
        h_um, w_um = (n * factor * pixel_size_A / 1e4 for n in valid.shape)
        if max(h_um, w_um) < 300:  # a few squares at most
            said.append(f"it spans only {w_um:.0f} x {h_um:.0f} µm (an atlas spans 1-3 mm)")
    return "; ".join(said)


def _normalised_acf(centred: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Autocorrelation normalised by the overlap of the valid area, 1 at zero lag.

    Zero-padded to twice the size, so there is no wrap-around; returned with zero
    lag at the centre, lags up to half the image in each direction.
    """
    h, w = centred.shape
    shape = (2 * h, 2 * w)
    f = np.fft.rfft2(centred, shape)
    m = np.fft.rfft2(valid.astype(np.float64), shape)
    num = np.fft.fftshift(np.fft.irfft2(np.abs(f) ** 2, shape))
    overlap = np.fft.fftshift(np.fft.irfft2(np.abs(m) ** 2, shape))
    acf = num / np.maximum(overlap, 1.0)
    zero = acf[h, w]
    if zero <= 0:
        raise InputError(None, "no grid lattice found (the image is flat)")
    acf = acf / zero
    # Lags with little overlap are noise; keep those where at least 1/4 of the data overlaps.
    acf[overlap < 0.25 * overlap[h, w]] = 0.0
    return acf


def _lattice_vector(
    acf: np.ndarray, short_side: int, factor: int, pixel_size_A: float | None
) -> tuple[np.ndarray, float]:
    """Shortest lattice vector from the autocorrelation peaks, and the lattice score.

    The autocorrelation of a square lattice peaks at every lattice vector; unlike
    the spectrum it has no harmonics, so the shortest strong peak is the pitch.
    """
    from skimage.feature import peak_local_max

    h2, w2 = acf.shape
    cy, cx = h2 // 2, w2 // 2
    half = np.where(np.arange(h2)[:, None] >= cy, acf, -1.0)  # +y half-plane: a and -a are one
    half[cy, : cx + 1] = -1.0
    peaks = peak_local_max(half, min_distance=2, threshold_abs=0.1, exclude_border=False)
    best_vec, best_score = None, -np.inf

    def value(vec: np.ndarray) -> float:
        x, y = round(vec[0]) + cx, round(vec[1]) + cy
        if not (1 <= x < w2 - 1 and 1 <= y < h2 - 1):
            return 0.0
        return float(acf[y - 1 : y + 2, x - 1 : x + 2].max())

    candidates = []
    for py, px in peaks:
        vec = np.array([px - cx, py - cy], float)
        length = np.hypot(*vec)
        if length < 4 or length > 0.5 * short_side:
            continue
        perp = np.array([-vec[1], vec[0]])
        # A lattice vector has its perpendicular partner and the diagonals as peaks too.
        score = float(np.mean([value(vec), value(perp), value(vec + perp), value(vec - perp)]))
        candidates.append((score, length, vec))
    if not candidates:
        raise InputError(None, "no grid lattice found")
    best_score = max(c[0] for c in candidates)
    if best_score < _MIN_LATTICE_SCORE:
        raise InputError(None, f"no grid lattice found (lattice score {best_score:.2f})")
    # Longer lattice vectors (2a, a+b) score almost as well: take the shortest good one.
    good = [c for c in candidates if c[0] >= 0.8 * best_score]
    score, length, best_vec = min(good, key=lambda c: c[1])
    if pixel_size_A:
        pitch_um = length * factor * pixel_size_A / 1e4
        if not PLAUSIBLE_PITCH_UM[0] <= pitch_um <= PLAUSIBLE_PITCH_UM[1]:
            # A check only: the image decides; the pixel size may be wrong.
            logging.getLogger(__name__).warning(
                "grid pitch %.0f µm is unusual (100-600 mesh is 42-250 µm): is the pixel "
                "size of %.6g Å right?",
                pitch_um,
                pixel_size_A,
            )
    return best_vec, score


def _refine_vector(acf: np.ndarray, a0: np.ndarray) -> np.ndarray:
    """Sub-pixel lattice vector from many autocorrelation peaks (least squares).

    Peaks at m a + q b with b = R90 a are located by a quadratic fit each; far
    peaks pin the pitch and angle more finely than the first one, so the fit
    grows outwards, each round predicting the next peaks from the last estimate.
    """
    h2, w2 = acf.shape
    cy, cx = h2 // 2, w2 // 2
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    a = np.asarray(a0, float)
    max_reach = int(min(h2, w2) / 2 / max(np.hypot(*a), 1.0))
    reach = 1
    while True:
        b = rot @ a
        rows, rhs = [], []
        for m in range(-reach, reach + 1):
            for q in range(0, reach + 1):
                if (m, q) == (0, 0):
                    continue
                guess = m * a + q * b
                x, y = round(guess[0]) + cx, round(guess[1]) + cy
                if not (2 <= x < w2 - 2 and 2 <= y < h2 - 2):
                    continue
                patch = acf[y - 1 : y + 2, x - 1 : x + 2]
                dy, dx = np.unravel_index(np.argmax(patch), patch.shape)
                x, y = x + dx - 1, y + dy - 1
                if acf[y, x] < 0.2:
                    continue
                sub = _quadratic_peak(acf[y - 1 : y + 2, x - 1 : x + 2])
                rows.append(m * np.eye(2) + q * rot)
                rhs.append(np.array([x - cx + sub[0], y - cy + sub[1]]))
        if len(rows) >= 2:
            sol, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)
            if np.hypot(*(sol - a0)) < 2.0:
                a = sol
        if reach >= max_reach:
            return a
        reach = min(2 * reach, max_reach)


def _quadratic_peak(p3: np.ndarray) -> tuple[float, float]:
    """Sub-pixel offset ``(dx, dy)`` of the maximum of a 3x3 patch (separable parabolas)."""

    def offset(lo: float, mid: float, hi: float) -> float:
        den = lo - 2 * mid + hi
        return 0.0 if den >= 0 else float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))

    return offset(p3[1, 0], p3[1, 1], p3[1, 2]), offset(p3[0, 1], p3[1, 1], p3[2, 1])


def _fold_cell(
    small: np.ndarray, bmap: np.ndarray, valid: np.ndarray, lat: Lattice, bins: int = 24
) -> tuple[float, float, float]:
    """Fold the image onto one lattice cell: bar width fraction and bar/film levels.

    Returns
    -------
    bar_fraction : float
        Bar width over pitch.
    bar_level, film_level : float
        Median intensity on the bar centre lines and in the square centres.
    """
    yy, xx = np.nonzero(valid)
    i, j = lat.to_indices(xx.astype(float), yy.astype(float))
    u, v = i - np.round(i), j - np.round(j)  # in [-0.5, 0.5]
    bu = np.clip(((u + 0.5) * bins).astype(int), 0, bins - 1)
    bv = np.clip(((v + 0.5) * bins).astype(int), 0, bins - 1)
    vals = bmap[yy, xx]
    total = np.bincount(bu * bins + bv, weights=vals, minlength=bins * bins)
    count = np.bincount(bu * bins + bv, minlength=bins * bins)
    cell = (total / np.maximum(count, 1)).reshape(bins, bins)
    band = slice(bins * 3 // 8, bins - bins * 3 // 8)  # centre band, free of the other bar family
    fractions = []
    for profile in (cell[:, band].mean(axis=1), cell[band, :].mean(axis=0)):
        lo, hi = np.percentile(profile, 5), np.percentile(profile, 95)
        fractions.append(np.mean(profile < 0.5 * (lo + hi)))
    bar_fraction = float(np.clip(np.mean(fractions), 0.05, 0.6))
    raw = small[yy, xx]
    centre = (np.abs(u) < 0.2) & (np.abs(v) < 0.2)
    on_bar = (np.abs(u) > 0.5 - bar_fraction / 4) & (np.abs(v) < 0.3)
    film = float(np.median(raw[centre])) if centre.any() else float(np.nanmax(raw))
    bar = float(np.median(raw[on_bar])) if on_bar.any() else float(np.nanmin(raw))
    return bar_fraction, bar, film
