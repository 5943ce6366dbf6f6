"""Appearance randomisation for training: learn the defects, not the simulator's look.

Real atlases differ from simulated ones (and from each other) in contrast,
gamma, noise, blur, hole texture, vignetting and square orientation. Each
transform below changes one of those and keeps what the labels depend on: the
mean intensity (brightness, relative to the atlas) is restored after the
contrast changes, and geometric transforms move defects without changing them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def flip_rotate(square: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random multiple of 90° and a random flip."""
    out = np.rot90(square, k=int(rng.integers(4)))
    return np.fliplr(out) if rng.random() < 0.5 else out


def small_rotation(square: np.ndarray, rng: np.random.Generator, max_deg: float = 12) -> np.ndarray:
    """Rotate by up to ``max_deg`` degrees (edges reflected, so no black corners)."""
    angle = float(rng.uniform(-max_deg, max_deg))
    return ndimage.rotate(square, angle, reshape=False, order=1, mode="reflect")


def contrast_gamma(square: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast (x0.6-1.6) and gamma (0.7-1.4); the mean is kept."""
    mean = float(square.mean())
    lo, hi = float(square.min()), float(square.max())
    if hi <= lo:
        return square.copy()
    unit = (square - lo) / (hi - lo)
    unit = unit ** float(rng.uniform(0.7, 1.4))
    out = unit * (hi - lo) + lo
    out = (out - out.mean()) * float(rng.uniform(0.6, 1.6))
    return out + mean


def blur(square: np.ndarray, rng: np.random.Generator, max_sigma: float = 1.5) -> np.ndarray:
    """Gaussian blur of random width (0-``max_sigma`` pixels at the model's size)."""
    return ndimage.gaussian_filter(square, float(rng.uniform(0, max_sigma)))


def noise(square: np.ndarray, rng: np.random.Generator, max_level: float = 0.35) -> np.ndarray:
    """Additive Gaussian noise of random level (relative to the square's spread)."""
    level = float(rng.uniform(0, max_level)) * float(square.std() or 1.0)
    return square + rng.normal(0, level, square.shape).astype(square.dtype)


def vignetting(square: np.ndarray, rng: np.random.Generator, max_amp: float = 0.3) -> np.ndarray:
    """A zero-mean linear + radial illumination gradient."""
    h, w = square.shape
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    spread = float(square.std() or 1.0)
    grad = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
    grad = grad + rng.uniform(-1, 1) * (xx**2 + yy**2)
    grad = grad - grad.mean()
    grad /= np.abs(grad).max() + 1e-6
    return square + float(rng.uniform(0, max_amp)) * spread * grad


def hole_texture(square: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A periodic pattern of holes (random pitch and angle) on the bright film areas."""
    h, w = square.shape
    pitch = float(rng.uniform(3, 8))
    theta = float(rng.uniform(0, np.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    dots = np.cos(2 * np.pi * u / pitch) * np.cos(2 * np.pi * v / pitch)
    bright = square > np.median(square)
    amp = float(rng.uniform(0.05, 0.3)) * float(square.std() or 1.0)
    return square + amp * dots * bright


def randomise_appearance(square: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a random subset of the appearance transforms to one square.

    Parameters
    ----------
    square
        ``(s, s)`` normalised square; not modified.
    rng
        The generator of every random choice (seed it for reproducible runs).

    Returns
    -------
    numpy.ndarray
        ``(s, s)`` float32.
    """
    out = flip_rotate(np.asarray(square, dtype=np.float32), rng)
    if rng.random() < 0.3:
        out = small_rotation(out, rng)
    if rng.random() < 0.3:
        out = hole_texture(out, rng)
    if rng.random() < 0.7:
        out = contrast_gamma(out, rng)
    if rng.random() < 0.5:
        out = vignetting(out, rng)
    if rng.random() < 0.5:
        out = blur(out, rng)
    if rng.random() < 0.5:
        out = noise(out, rng)
    return np.ascontiguousarray(out, dtype=np.float32)
