"""Geometry of a cryo-EM grid: the copper mesh lattice, rounded squares, the holey film.

Everything here is a pure function of coordinates. Lengths are in µm; image
positions are pixel centres, x = column and y = row, so pixel ``(x, y)`` sits at
``(x * px_um, y * px_um)`` µm in the image frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Mesh number -> (pitch, bar width) in µm, as sold for 3.05 mm copper grids.
MESH_SPECS: dict[int, tuple[float, float]] = {
    200: (125.0, 35.0),
    300: (83.0, 25.0),
    400: (62.0, 25.0),
}

#: Holey-film names -> (hole diameter, hole pitch) in µm (Quantifoil naming: Rdiameter/gap).
FILM_SPECS: dict[str, tuple[float, float]] = {
    "R1.2/1.3": (1.2, 2.5),
    "R2/1": (2.0, 3.0),
    "R2/2": (2.0, 4.0),
    "R3.5/1": (3.5, 4.5),
}


@dataclass(frozen=True)
class Lattice:
    """A square lattice of grid squares in the image frame.

    Attributes
    ----------
    pitch_um
        Centre-to-centre distance of neighbouring squares.
    opening_um
        Side of a square opening (pitch minus bar width).
    corner_radius_um
        Radius of the rounded corners of an opening.
    angle_rad
        Rotation of the first lattice axis from the image x axis (towards +y).
    origin_um
        ``(x, y)`` of the centre of square ``(0, 0)`` in the image frame.
    """

    pitch_um: float
    opening_um: float
    corner_radius_um: float
    angle_rad: float
    origin_um: tuple[float, float]

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the two lattice axes in the image frame."""
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        return np.array([c, s]), np.array([-s, c])

    def centre_um(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image-frame centre of square ``(i, j)`` in µm."""
        e1, e2 = self.axes
        x = self.origin_um[0] + self.pitch_um * (np.asarray(i) * e1[0] + np.asarray(j) * e2[0])
        y = self.origin_um[1] + self.pitch_um * (np.asarray(i) * e1[1] + np.asarray(j) * e2[1])
        return x, y

    def coords(self, x_um: np.ndarray, y_um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lattice coordinates ``(u, v)`` in pitches; square ``(i, j)`` is centred on integers."""
        # Python floats keep float32 inputs in float32 (numpy scalars would promote).
        c, s = float(np.cos(self.angle_rad)), float(np.sin(self.angle_rad))
        inv = 1.0 / float(self.pitch_um)
        dx = np.asarray(x_um) - float(self.origin_um[0])
        dy = np.asarray(y_um) - float(self.origin_um[1])
        return (dx * c + dy * s) * inv, (dy * c - dx * s) * inv

    def index_range(self, width_um: float, height_um: float) -> tuple[int, int, int, int]:
        """``(imin, imax, jmin, jmax)`` covering every square that touches the image."""
        xs = np.array([0.0, width_um, 0.0, width_um])
        ys = np.array([0.0, 0.0, height_um, height_um])
        u, v = self.coords(xs, ys)
        return (
            int(np.floor(u.min())) - 1,
            int(np.ceil(u.max())) + 1,
            int(np.floor(v.min())) - 1,
            int(np.ceil(v.max())) + 1,
        )


def rounded_square_sdf(du: np.ndarray, dv: np.ndarray, half: float, radius: float) -> np.ndarray:
    """Signed distance (µm) to a rounded square centred at 0; negative inside.

    Parameters
    ----------
    du, dv
        Offsets from the square centre along the two lattice axes, µm.
    half
        Half the side of the square.
    radius
        Corner radius (0 gives sharp corners).
    """
    inner = half - radius
    qx = np.abs(du) - inner
    qy = np.abs(dv) - inner
    mx, my = np.maximum(qx, 0), np.maximum(qy, 0)
    outside = np.sqrt(mx * mx + my * my)
    inside = np.minimum(np.maximum(qx, qy), 0)
    return outside + inside - radius


def coverage_from_sdf(sdf_um: np.ndarray, px_um: float) -> np.ndarray:
    """Fraction of a pixel inside a shape, from the signed distance at its centre.

    A linear ramp one pixel wide: exact for a straight edge crossing the pixel
    squarely, and a close anti-aliasing for curved or oblique edges.
    """
    return np.clip(0.5 - sdf_um / px_um, 0.0, 1.0)


def hole_coverage(
    x_um: np.ndarray,
    y_um: np.ndarray,
    hole_diameter_um: float,
    hole_pitch_um: float,
    angle_rad: float,
    origin_um: tuple[float, float],
    px_um: float,
    blur_px: float = 0.5,
) -> np.ndarray:
    """Fraction of each pixel that falls in a hole of a square holey-film lattice.

    Holes of a few pixels or more are drawn directly with anti-aliased edges.
    Smaller holes are drawn from the Fourier series of the hole lattice, each
    harmonic weighted by the pixel's box integration and a Gaussian detector
    blur, so that texture finer than a pixel averages out (mean coverage is
    exact) instead of aliasing into false patterns.

    Parameters
    ----------
    x_um, y_um
        Pixel-centre coordinates in the image frame, µm: a ``(1, w)`` row and
        a ``(h, 1)`` column (or full grids in which x varies only along rows
        and y only along columns).
    hole_diameter_um, hole_pitch_um
        Hole size and centre-to-centre spacing.
    angle_rad
        Rotation of the hole lattice in the image.
    origin_um
        A hole centre in the image frame.
    px_um
        Pixel size.
    blur_px
        Standard deviation of the detector blur in pixels (Fourier mode only).

    Returns
    -------
    numpy.ndarray
        Broadcast shape of the inputs, float32 in [0, 1].
    """
    r = hole_diameter_um / 2
    p = hole_pitch_um
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    x = np.asarray(x_um, dtype=np.float32) - np.float32(origin_um[0])
    y = np.asarray(y_um, dtype=np.float32) - np.float32(origin_um[1])
    if r / px_um >= 1.5:
        u = (x * np.float32(c) + y * np.float32(s)) / np.float32(p)
        v = (-x * np.float32(s) + y * np.float32(c)) / np.float32(p)
        u -= np.rint(u)
        v -= np.rint(v)
        d = np.sqrt(u * u + v * v) * np.float32(p)
        return np.clip(np.float32(0.5) + (np.float32(r) - d) / np.float32(px_um), 0, 1)
    return _hole_coverage_fourier(x, y, r, p, c, s, px_um, blur_px)


def _hole_coverage_fourier(
    x: np.ndarray,
    y: np.ndarray,
    r: float,
    p: float,
    c: float,
    s: float,
    px_um: float,
    blur_px: float,
) -> np.ndarray:
    """Pixel-integrated hole coverage as a truncated Fourier series (see :func:`hole_coverage`)."""
    fill = np.pi * r * r / (p * p)
    amps, fxs, fys = _hole_series(r, p, c, s, px_um, blur_px)
    shape = np.broadcast_shapes(x.shape, y.shape)
    if not len(amps):
        return np.full(shape, fill, dtype=np.float32)
    a = amps
    # cos(ax + by) = cos(ax)cos(by) - sin(ax)sin(by): for a row of x and a column
    # of y the whole series is one matrix product (rows, 2K) @ (2K, columns).
    xr = np.broadcast_to(x, shape)[0:1, :].ravel()
    yc = np.broadcast_to(y, shape)[:, 0:1].ravel()
    ax = np.float32(2 * np.pi) * np.outer(fxs, xr)  # (K, W)
    ay = np.float32(2 * np.pi) * np.outer(yc, fys)  # (H, K)
    left = np.hstack([np.cos(ay) * a, -np.sin(ay) * a])
    right = np.vstack([np.cos(ax), np.sin(ax)])
    out = left @ right
    out += np.float32(fill)
    return np.clip(out, 0, 1)


@functools.lru_cache(maxsize=16)
def _hole_series(
    r: float, p: float, c: float, s: float, px_um: float, blur_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fourier terms of the pixel-integrated hole lattice above a visible amplitude.

    Returns float32 ``(amplitude, fx, fy)`` arrays, one entry per +-k pair
    (amplitude doubled); cached because every strip of an atlas needs the same.
    """
    from scipy.special import j1

    fill = np.pi * r * r / (p * p)
    kmax = int(np.ceil(1.5 * p / px_um)) + 1
    k1, k2 = np.meshgrid(np.arange(0, kmax + 1), np.arange(-kmax, kmax + 1), indexing="ij")
    half_plane = (k1 > 0) | (k2 > 0)  # each +-k pair once, no DC
    fu, fv = k1[half_plane] / p, k2[half_plane] / p  # cycles/µm along the hole-lattice axes
    fx, fy = fu * c - fv * s, fu * s + fv * c  # in the image axes
    q = 2 * np.pi * np.hypot(fu, fv) * r
    amp = fill * 2 * j1(q) / q
    # pixel box integration x detector blur
    amp = amp * np.sinc(fx * px_um) * np.sinc(fy * px_um)
    amp = amp * np.exp(-2 * (np.pi * blur_px * px_um) ** 2 * (fx * fx + fy * fy))
    keep = np.abs(amp) >= 0.003
    return (
        (2 * amp[keep]).astype(np.float32),
        fx[keep].astype(np.float32),
        fy[keep].astype(np.float32),
    )


def disc_coverage(
    x_um: np.ndarray,
    y_um: np.ndarray,
    centre_um: tuple[float, float],
    radius_um: float,
    px_um: float,
) -> np.ndarray:
    """Anti-aliased fraction of each pixel inside a disc."""
    dx = np.asarray(x_um) - float(centre_um[0])
    dy = np.asarray(y_um) - float(centre_um[1])
    d = np.sqrt(dx * dx + dy * dy)  # separable squares: cheap for a row and a column
    return np.clip(0.5 + (radius_um - d) / px_um, 0.0, 1.0)
