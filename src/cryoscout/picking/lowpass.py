"""The picker's input low-pass: a Gaussian to the particle scale, at training and prediction.

``pick train --lowpass A`` filters every tomogram with a Gaussian of sigma ``A`` Å
(``A / voxel size`` voxels) before normalisation, and records the sigma in voxels in the
model's normalisation (``normalization["lowpass_sigma"]``), so that prediction filters
exactly the same way. Noise above the particle scale, whose colour is what differs most
between microscopes, then never reaches the network (BENCHMARKS.md, "Picking under
domain shift").

Prediction works tile by tile on tomograms larger than memory: :func:`lowpass_region`
filters a tile read with a margin of the kernel's radius, so it equals the same region of
the whole filtered volume; :func:`lowpass_sample` gives the strided subsample of the
filtered volume that the normalisation statistics are computed from, reading ``2r + 1``
planes per sampled plane instead of the whole tomogram filtered at once.
"""

from __future__ import annotations

import math

import numpy as np

# Kernel extent in sigmas (scipy's default; what the domain-shift benchmark measured).
TRUNCATE = 4.0


def sigma_voxels(lowpass_A: float, voxel_size_A: float) -> float:
    """Sigma in voxels of a low-pass of sigma ``lowpass_A`` Å.

    Raises
    ------
    ValueError
        ``lowpass_A`` negative or not finite, or ``voxel_size_A`` not positive.
    """
    if not (math.isfinite(lowpass_A) and lowpass_A >= 0):
        raise ValueError(f"the low-pass must be a sigma of 0 Å or more, not {lowpass_A}")
    if not (voxel_size_A and math.isfinite(voxel_size_A) and voxel_size_A > 0):
        raise ValueError(f"a low-pass in Å needs the voxel size, not {voxel_size_A}")
    return float(lowpass_A) / float(voxel_size_A)


def check_width(lowpass_A: float, voxel_size_A: float, patch: int) -> None:
    """Refuse a low-pass wider than a quarter of the training patch.

    A wider Gaussian blurs a particle into its whole patch, so the network would see no
    particle edge to learn from.

    Raises
    ------
    ValueError
        The sigma in voxels is more than ``patch / 4``; the message gives both in voxels.
    """
    sigma = sigma_voxels(lowpass_A, voxel_size_A)
    if sigma > patch / 4:
        raise ValueError(
            f"{lowpass_A:g} Å is {sigma:.1f} voxels at {voxel_size_A:g} Å/voxel, wider than "
            f"a quarter of the {patch}-voxel patch"
        )


def recorded_sigma(normalization: dict | None) -> float:
    """The low-pass sigma (voxels) recorded in a model's normalisation; 0: none."""
    return float((normalization or {}).get("lowpass_sigma") or 0.0)


def kernel_radius(sigma: float) -> int:
    """Voxels on each side that a filtered voxel depends on (scipy's kernel radius)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def lowpass(volume: np.ndarray, sigma: float) -> np.ndarray:
    """The whole tomogram Gaussian low-passed: a new float32 array.

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram (may be memory-mapped; read whole).
    sigma
        Gaussian sigma in voxels; 0 returns a float32 copy.
    """
    from scipy.ndimage import gaussian_filter

    vol = np.array(volume, dtype=np.float32)
    if sigma <= 0:
        return vol
    return gaussian_filter(vol, float(sigma), truncate=TRUNCATE)


def lowpass_region(volume: np.ndarray, region: tuple[slice, ...], sigma: float) -> np.ndarray:
    """``lowpass(volume, sigma)[region]`` without filtering the whole volume.

    The region is read with a margin of :func:`kernel_radius` voxels (clipped at the
    volume's edges, where the filter reflects exactly as on the whole volume), filtered and
    cropped, so tiled and whole-volume results agree to float rounding.

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram (may be memory-mapped).
    region
        One ``slice(start, stop)`` per axis (step 1).
    sigma
        Gaussian sigma in voxels.
    """
    r = kernel_radius(sigma)
    outer, inner = [], []
    for s, n in zip(region, volume.shape, strict=True):
        start, stop, _ = s.indices(n)
        lo, hi = max(start - r, 0), min(stop + r, n)
        outer.append(slice(lo, hi))
        inner.append(slice(start - lo, stop - lo))
    return lowpass(volume[tuple(outer)], sigma)[tuple(inner)]


def lowpass_sample(volume: np.ndarray, sigma: float, step: int) -> np.ndarray:
    """``lowpass(volume, sigma)[::step, ::step, ::step]`` (the normalisation's subsample).

    Each sampled plane is filtered along z from its ``2r + 1`` neighbours, then in-plane,
    as the separable 3D filter does, so memory stays at a few planes.
    """
    from scipy.ndimage import gaussian_filter, gaussian_filter1d

    r, n = kernel_radius(sigma), volume.shape[0]
    planes = []
    for z in range(0, n, step):
        lo, hi = max(z - r, 0), min(z + r + 1, n)
        slab = np.asarray(volume[lo:hi], dtype=np.float32)
        plane = gaussian_filter1d(slab, float(sigma), axis=0, truncate=TRUNCATE)[z - lo]
        plane = gaussian_filter(plane, float(sigma), truncate=TRUNCATE)
        planes.append(plane[::step, ::step])
    return np.stack(planes)
