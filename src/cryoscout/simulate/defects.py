"""Defects of one grid square, sampled at random and drawn with known extent.

A defect is described in the square's own frame: ``(du, dv)`` in µm from the
square centre along the two lattice axes, so the same description renders at
any pixel size or rotation. :func:`sample_defects` draws a description,
:func:`render_defects` turns it into anti-aliased per-pixel maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DefectRates:
    """Probability that a square carries each kind of defect."""

    broken: float = 0.08
    crack: float = 0.12
    contamination: float = 0.25
    dry: float = 0.05
    bent_bar: float = 0.03
    specks: float = 0.5  # mean number of tiny ice crystals on every square


@dataclass
class SquareDefects:
    """What is wrong with one square (all lengths in µm, square frame)."""

    dry: bool = False
    broken_target: float = 0.0  # fraction of the opening whose film is gone
    broken_modes: np.ndarray | None = None  # (k, 4): fu, fv, amplitude, phase
    broken_ramp: tuple[float, float] = (0.0, 0.0)
    cracks: list[np.ndarray] = field(default_factory=list)  # polylines (n, 2)
    crack_widths: list[float] = field(default_factory=list)
    blobs: np.ndarray | None = None  # (n, 10): x, y, r, thickness_nm, 3x(amp), phase seed
    bent_bar: tuple[int, float, float, float] | None = None  # side, depth, centre, span

    @property
    def any(self) -> bool:
        """Whether anything has to be drawn."""
        return bool(
            self.broken_target > 0 or self.cracks or self.blobs is not None or self.bent_bar
        )


@dataclass
class DefectMaps:
    """Per-pixel defect coverage in a window (each in [0, 1] unless stated)."""

    vacuum: np.ndarray  # film and ice gone (broken or cracked)
    broken: np.ndarray
    crack: np.ndarray
    contamination: np.ndarray
    contamination_nm: np.ndarray  # extra ice-equivalent thickness
    bar: np.ndarray  # opening covered by a bent bar


def sample_defects(
    rng: np.random.Generator, rates: DefectRates, opening_um: float
) -> SquareDefects:
    """Draw the defects of one square.

    Severities are spread so that every score level occurs: broken fractions
    from a small tear to the whole film, one to several cracks, contaminated
    fractions from 1% to about half of the square.
    """
    half = opening_um / 2
    d = SquareDefects()
    d.dry = bool(rng.random() < rates.dry)
    if rng.random() < rates.broken:
        # A third of broken squares lose all their film; the rest part of it.
        d.broken_target = 1.0 if rng.random() < 0.3 else float(rng.uniform(0.08, 0.9))
        k = 6
        f = rng.normal(0, 1.2 / opening_um, size=(k, 2))
        d.broken_modes = np.column_stack(
            [f, rng.uniform(0.3, 1.0, k) / (1 + np.arange(k)), rng.uniform(0, 2 * np.pi, k)]
        )
        ang = rng.uniform(0, 2 * np.pi)
        d.broken_ramp = (np.cos(ang) * 1.5 / half, np.sin(ang) * 1.5 / half)
    if rng.random() < rates.crack:
        n = 1 + int(rng.integers(0, 6))
        for _ in range(n):
            d.cracks.extend(_crack_polylines(rng, opening_um))
        d.crack_widths = [float(rng.uniform(0.3, 1.0)) for _ in d.cracks]
    blobs = []
    if rng.random() < rates.contamination:
        target = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5))))
        area = opening_um**2
        if rng.random() < 0.5:  # many small ice crystals
            r = rng.uniform(0.5, 2.5, size=400)
            n = int(np.clip(target * area / (np.pi * np.mean(r**2)), 3, 400))
            blobs.append(_blobs(rng, r[:n], half, (150, 600)))
        else:  # a few large lumps (ethane, frost)
            rmax = max(5.0, 0.3 * opening_um)
            r = rng.uniform(4.0, rmax, size=8)
            n = int(np.clip(target * area / (np.pi * np.mean(r**2)), 1, 8))
            blobs.append(_blobs(rng, r[:n], half, (400, 1500)))
    n_specks = int(rng.poisson(rates.specks))
    if n_specks:
        blobs.append(_blobs(rng, rng.uniform(0.4, 1.2, size=n_specks), half, (150, 400)))
    if blobs:
        d.blobs = np.concatenate(blobs)
    if rng.random() < rates.bent_bar:
        side = int(rng.integers(0, 4))
        d.bent_bar = (
            side,
            float(rng.uniform(0.1, 0.55) * opening_um),
            float(rng.uniform(-0.4, 0.4) * half),
            float(rng.uniform(0.5, 1.3) * half),
        )
    return d


def _crack_polylines(rng: np.random.Generator, opening_um: float) -> list[np.ndarray]:
    """One crack: a nearly straight random walk with occasional kinks, sometimes branched."""
    half = opening_um / 2
    step = max(1.5, opening_um / 25)
    n = int(rng.uniform(0.3, 1.3) * opening_um / step) + 2
    start = rng.uniform(-half, half, size=2)
    # film tears along fairly straight lines that kink now and then
    kinks = rng.normal(0, 0.7, size=n) * (rng.random(n) < 0.12)
    turns = np.cumsum(rng.normal(0, 0.08, size=n) + kinks) + rng.uniform(0, 2 * np.pi)
    pts = start + step * np.cumsum(np.column_stack([np.cos(turns), np.sin(turns)]), axis=0)
    lines = [np.vstack([start, pts])]
    if rng.random() < 0.4 and n > 4:
        k = int(rng.integers(1, n - 1))
        m = max(3, n // 2)
        bt = np.cumsum(rng.normal(0, 0.1, size=m)) + turns[k] + rng.choice([-1, 1]) * 0.9
        b = pts[k] + step * np.cumsum(np.column_stack([np.cos(bt), np.sin(bt)]), axis=0)
        lines.append(np.vstack([pts[k], b]))
    return lines


def _blobs(
    rng: np.random.Generator, radii: np.ndarray, half: float, thick_nm: tuple[float, float]
) -> np.ndarray:
    """Blob table: centre, radius, thickness and an irregular outline (harmonics 2, 3, 4)."""
    n = len(radii)
    return np.column_stack(
        [
            rng.uniform(-half, half, size=(n, 2)),
            radii,
            rng.uniform(*thick_nm, size=n),
            rng.uniform(0, 0.12, size=(n, 3)),
            rng.uniform(0, 2 * np.pi, size=(n, 3)),
        ]
    ).astype(np.float64)


def render_defects(
    d: SquareDefects,
    du: np.ndarray,
    dv: np.ndarray,
    open_cov: np.ndarray,
    px_um: float,
    half_um: float,
) -> DefectMaps:
    """Draw the defects of one square on a pixel window.

    Parameters
    ----------
    d
        The square's defects.
    du, dv
        ``(h, w)`` offsets of the window's pixel centres from the square
        centre along the lattice axes, µm.
    open_cov
        ``(h, w)`` fraction of each pixel in the square's opening; the broken
        fraction is reached within it.
    px_um
        Pixel size.
    half_um
        Half the side of the square opening.

    Returns
    -------
    DefectMaps
        ``(h, w)`` float32 maps.
    """
    shape = du.shape
    zeros = np.zeros(shape, dtype=np.float32)
    broken = zeros.copy()
    if d.broken_target >= 0.999:
        broken[:] = 1.0
    elif d.broken_target > 0:
        broken = _broken_map(d, du, dv, open_cov)
    crack = zeros.copy()
    for line, width in zip(d.cracks, d.crack_widths, strict=True):
        _draw_polyline(line, width, du, dv, px_um, crack)
    cont = zeros.copy()
    cont_nm = zeros.copy()
    if d.blobs is not None:
        _draw_blobs(d.blobs, du, dv, px_um, cont, cont_nm)
    bar = zeros.copy()
    if d.bent_bar is not None:
        bar = _bent_bar(d.bent_bar, du, dv, px_um, half_um)
    vacuum = np.maximum(broken, crack)
    return DefectMaps(vacuum, broken, crack, cont, cont_nm, bar)


def _broken_map(
    d: SquareDefects, du: np.ndarray, dv: np.ndarray, open_cov: np.ndarray
) -> np.ndarray:
    """Torn-off film: a smooth random field above a threshold that hits the target fraction."""
    f = d.broken_ramp[0] * du + d.broken_ramp[1] * dv
    for fu, fv, a, ph in d.broken_modes:
        f = f + a * np.cos(2 * np.pi * (fu * du + fv * dv) + ph)
    inside = open_cov > 0.5
    if not inside.any():
        return np.zeros(du.shape, dtype=np.float32)
    thr = np.quantile(f[inside], 1 - d.broken_target)
    gy, gx = np.gradient(f)
    grad = np.maximum(np.hypot(gx, gy), 1e-6)  # field change per pixel: one-pixel edge ramp
    return np.clip(0.5 + (f - thr) / grad, 0, 1).astype(np.float32)


def _draw_polyline(
    line: np.ndarray,
    width: float,
    du: np.ndarray,
    dv: np.ndarray,
    px_um: float,
    out: np.ndarray,
) -> None:
    """Draw an anti-aliased line of ``width`` µm into ``out`` (maximum), in place.

    The polyline is sampled every quarter pixel and each sample stamps the
    pixels around it with ``clip(0.5 + (width / 2 - distance) / px)``; the
    distance to the nearest sample is within 1/30 pixel of the distance to the
    polyline, and only pixels near the crack are touched.
    """
    u0, v0, a_inv = _window_frame(du, dv)
    seg = np.diff(line, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    pts = [line[:1]]
    for (ax, ay), (sx, sy), ln in zip(line[:-1], seg, lengths, strict=True):
        t = np.arange(1, max(int(np.ceil(ln / (px_um / 4))), 1) + 1) / max(
            int(np.ceil(ln / (px_um / 4))), 1
        )
        pts.append(np.column_stack([ax + t * sx, ay + t * sy]))
    p = np.concatenate(pts)
    # window pixel coordinates (column, row) of the samples
    col_row = (p - [u0, v0]) @ a_inv.T
    k = int(np.ceil(width / 2 / px_um + 1.5))
    off = np.arange(-k, k + 1)
    oc, orow = np.meshgrid(off, off)
    cols = np.rint(col_row[:, 0])[:, None].astype(int) + oc.ravel()[None]
    rows = np.rint(col_row[:, 1])[:, None].astype(int) + orow.ravel()[None]
    h, w = du.shape
    ok = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    cols, rows = cols[ok], rows[ok]
    src = np.repeat(np.arange(len(p)), ok.sum(axis=1))
    dist = np.hypot(du[rows, cols] - p[src, 0], dv[rows, cols] - p[src, 1])
    cov = np.clip(0.5 + (width / 2 - dist) / px_um, 0, 1).astype(out.dtype)
    np.maximum.at(out, (rows, cols), cov)


def _window_frame(du: np.ndarray, dv: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Square-frame position of pixel (0, 0) and the inverse of the pixel -> square-frame map."""
    u0, v0 = float(du[0, 0]), float(dv[0, 0])
    a = np.array(
        [
            [du[0, 1] - u0 if du.shape[1] > 1 else 1.0, du[1, 0] - u0 if du.shape[0] > 1 else 0.0],
            [dv[0, 1] - v0 if du.shape[1] > 1 else 0.0, dv[1, 0] - v0 if du.shape[0] > 1 else 1.0],
        ]
    )
    return u0, v0, np.linalg.inv(a)


def _draw_blobs(
    blobs: np.ndarray,
    du: np.ndarray,
    dv: np.ndarray,
    px_um: float,
    cov: np.ndarray,
    thick: np.ndarray,
) -> None:
    """Union of irregular discs; each blob is drawn only in its own bounding box."""
    u0, v0, a_inv = _window_frame(du, dv)
    h, w = du.shape
    for bx, by, r, t_nm, a1, a2, a3, p1, p2, p3 in blobs:
        rr = r * (1 + a1 + a2 + a3) + px_um
        # window pixel of the blob centre (invert the affine pixel -> square frame map)
        cx, cy = a_inv @ [bx - u0, by - v0]
        rp = rr / px_um + 1
        x0, x1 = max(int(cx - rp), 0), min(int(cx + rp) + 2, w)
        y0, y1 = max(int(cy - rp), 0), min(int(cy + rp) + 2, h)
        if x0 >= x1 or y0 >= y1:
            continue
        ex = du[y0:y1, x0:x1] - bx
        ey = dv[y0:y1, x0:x1] - by
        phi = np.arctan2(ey, ex)
        radius = r * (1 + a1 * np.cos(2 * phi + p1) + a2 * np.cos(3 * phi + p2))
        radius = radius + r * a3 * np.cos(4 * phi + p3)
        c = np.clip(0.5 + (radius - np.hypot(ex, ey)) / px_um, 0, 1)
        np.maximum(cov[y0:y1, x0:x1], c, out=cov[y0:y1, x0:x1])
        np.maximum(thick[y0:y1, x0:x1], c * t_nm, out=thick[y0:y1, x0:x1])


def _bent_bar(
    spec: tuple[int, float, float, float],
    du: np.ndarray,
    dv: np.ndarray,
    px_um: float,
    half_um: float,
) -> np.ndarray:
    """A bar bent into the opening: a parabolic bulge from one side."""
    side, depth, centre, span = spec
    # normal coordinate n grows towards the chosen side; t runs along that side
    n, t = [(du, dv), (-du, dv), (dv, du), (-dv, du)][side]
    profile = depth * np.clip(1 - ((t - centre) / span) ** 2, 0, None)
    edge = half_um - profile  # the opening's edge, pushed inwards by the bulge
    return np.clip(0.5 + (n - edge) / px_um, 0, 1).astype(np.float32)
