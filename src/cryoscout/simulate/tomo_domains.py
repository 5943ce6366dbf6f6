"""Domain randomisation at the simulator level: a different "microscope" per tomogram.

A picker trained on tomograms of one simulator setting learns that setting's noise,
CTF and contents. Training on a *mixture* of settings, each tomogram with its own
SNR, noise colour, CTF, alignment errors, units and distractors (gold, vesicles,
non-annotated proteins), makes it learn what stays the same: the particles. Distractors
in the training tomograms are then learned as negatives (see
``picking.data.PatchDataset``'s ``distractor_fraction``).

:func:`draw_domain` draws one setting from :class:`DomainRanges`;
:func:`randomize_domain` applies it to a :class:`~cryoscout.simulate.tomogram.TomogramConfig`.
The same seed gives the same setting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cryoscout.simulate.tomogram import TomogramConfig


@dataclass(frozen=True)
class DomainRanges:
    """Ranges that :func:`draw_domain` draws a simulator setting from.

    Pairs are ``(low, high)`` drawn uniformly (``snr`` and ``intensity_scale``
    log-uniformly, integers inclusive); single floats are probabilities of a switch
    being on. The defaults span the settings of ``benchmarks/picking_domain_shift.py``'s
    test domains without containing them exactly.

    Attributes
    ----------
    snr
        Image SNR (variance ratio), log-uniform.
    noise_slope
        Noise power ``~ k^slope``: falling (< 0) to rising (> 0) with frequency.
    defocus_um, astigmatism_um
        Underfocus and astigmatism (µm); the astigmatism direction is uniform.
    defocus_gradient
        Probability of imaging each voxel at the defocus of its height.
    alignment_shift_px, alignment_rotation_deg
        Residual per-image alignment errors (standard deviations).
    intensity_scale, intensity_offset
        Units: ``scale`` log-uniform; ``offset`` uniform in multiples of the scale (the
        tomogram's standard deviation), so that float32 keeps the signal's precision.
    n_distractors, n_fiducials, n_membranes
        Non-annotated proteins, gold beads and vesicles.
    outside_material
        Probability that material enters from outside the field of view.
    """

    snr: tuple[float, float] = (0.04, 0.2)
    noise_slope: tuple[float, float] = (-1.5, 1.5)
    defocus_um: tuple[float, float] = (1.5, 6.0)
    astigmatism_um: tuple[float, float] = (0.0, 1.5)
    defocus_gradient: float = 0.5
    alignment_shift_px: tuple[float, float] = (0.0, 1.2)
    alignment_rotation_deg: tuple[float, float] = (0.0, 0.6)
    intensity_scale: tuple[float, float] = (1e-3, 1e3)
    intensity_offset: tuple[float, float] = (-100.0, 100.0)
    n_distractors: tuple[int, int] = (10, 40)
    n_fiducials: tuple[int, int] = (0, 6)
    n_membranes: tuple[int, int] = (0, 3)
    outside_material: float = 0.5


def draw_domain(rng: np.random.Generator | int, ranges: DomainRanges | None = None) -> dict:
    """Draw one simulator setting.

    Parameters
    ----------
    rng
        Generator or seed (the same seed gives the same setting).
    ranges
        What to draw from; ``None``: the defaults.

    Returns
    -------
    dict
        :class:`~cryoscout.simulate.tomogram.TomogramConfig` field -> value (plain
        Python numbers and booleans, YAML-friendly).
    """
    r = ranges or DomainRanges()
    rng = np.random.default_rng(rng)

    def uniform(lo_hi) -> float:
        return float(rng.uniform(*lo_hi))

    def log_uniform(lo_hi) -> float:
        return float(np.exp(rng.uniform(*np.log(lo_hi))))

    def integer(lo_hi) -> int:
        return int(rng.integers(lo_hi[0], lo_hi[1] + 1))

    scale = log_uniform(r.intensity_scale)
    return {
        "snr": log_uniform(r.snr),
        "noise_slope": uniform(r.noise_slope),
        "defocus_um": uniform(r.defocus_um),
        "astigmatism_um": uniform(r.astigmatism_um),
        "astigmatism_angle_deg": float(rng.uniform(-90.0, 90.0)),
        "defocus_gradient": bool(rng.random() < r.defocus_gradient),
        "alignment_shift_px": uniform(r.alignment_shift_px),
        "alignment_rotation_deg": uniform(r.alignment_rotation_deg),
        "intensity_scale": scale,
        "intensity_offset": scale * uniform(r.intensity_offset),
        "n_distractors": integer(r.n_distractors),
        "n_fiducials": integer(r.n_fiducials),
        "n_membranes": integer(r.n_membranes),
        "outside_material": bool(rng.random() < r.outside_material),
    }


def randomize_domain(
    config: TomogramConfig,
    rng: np.random.Generator | int,
    ranges: DomainRanges | None = None,
) -> TomogramConfig:
    """A copy of ``config`` with a setting from :func:`draw_domain`.

    Shape, voxel size, particles, templates and distractor templates stay those of
    ``config``; ``config`` itself is not modified.
    """
    return replace(config, **draw_domain(rng, ranges))
