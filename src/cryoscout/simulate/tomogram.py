"""Simulated cryo-electron tomograms with ground truth (``cryoscout simulate tomogram``).

The pieces live in two small modules: :mod:`tomo_phantom` builds the clean density
(particles from templates or procedural shapes, membranes, gold) and
:mod:`tomo_imaging` images it (tilt series, CTF, noise, weighted back-projection).

Contrast convention: like real reconstructions, the output ``tomogram`` has protein
*darker* (lower values) than the surrounding ice; it is normalised to zero mean and
unit standard deviation, then mapped to ``intensity_scale * x + intensity_offset`` (other
software's and detectors' units). The clean phantom (``density``) is mass density,
protein bright.

What differs between microscopes and samples is switchable (:class:`TomogramConfig`,
all off by default): coloured noise, astigmatism, a defocus gradient, gold beads,
vesicles, non-annotated proteins (``distractors.csv``), material from outside the field
of view, residual alignment errors and the intensity units.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.simulate.tomo_phantom import (
    DISTRACTOR_COLUMNS,
    SHAPES,
    Template,
    build_phantom,
    prepare_template,
    procedural_template,
    template_radius,
)

__all__ = [
    "SHAPES",
    "SimulatedTomogram",
    "Template",
    "TomogramConfig",
    "load_templates",
    "simulate_tomogram",
    "template_radius",
]


@dataclass
class TomogramConfig:
    """What to simulate.

    Attributes
    ----------
    shape
        Volume shape ``(z, y, x)`` in voxels (the CLI's ``--shape`` is ``x,y,z``).
    voxel_size_A
        Voxel size in Å.
    n_particles
        Particles to place (fewer are placed when the slab is full).
    slab_thickness_nm
        Ice thickness; ``None``: 80% of the volume's z extent.
    templates
        ``{name: (density, voxel_size_A)}`` maps (see :func:`load_templates`); empty for
        the procedural shapes.
    shapes
        Procedural shape classes used when ``templates`` is empty.
    tilt_range_deg, tilt_step_deg
        Tilt series from ``-tilt_range`` to ``+tilt_range``.
    snr
        Image signal-to-noise ratio (variance ratio); ``None`` or 0 for no noise.
    ctf, defocus_um, phase_flip
        CTF at 300 kV with this underfocus; phase-flip before reconstruction.
    n_membranes, n_fiducials
        Vesicle-like shells and gold beads as distractors (gold's streaks come from the
        reconstruction itself).
    noise_slope
        Noise power spectrum ``~ k^slope`` in the images: 0 white (default), < 0 falling
        with frequency, > 0 rising.
    astigmatism_um, astigmatism_angle_deg
        Astigmatism: largest minus smallest defocus, and the direction of the largest.
    defocus_gradient
        Image each voxel at the defocus of its height along the beam (across the tilt
        axis at high tilt, and through the slab); off: one defocus per image.
    n_distractors
        Non-annotated proteins to add (recorded in ``distractors``, not in ``particles``).
    distractor_templates
        Their maps ``{name: (density, voxel_size_A)}``; empty: ``distractor_shapes``.
    distractor_shapes
        Procedural shapes used as distractors when there are no distractor templates.
    outside_material
        The specimen continues beyond the field of view in x (across the tilt axis),
        with the same particle, distractor, gold and vesicle density, so at high tilt
        material from outside enters the images; off: nothing outside the volume.
    alignment_shift_px, alignment_rotation_deg
        Standard deviation of residual per-image shifts (pixels, each of y and x) and
        in-plane rotations (degrees) that the reconstruction does not know about.
    intensity_scale, intensity_offset
        The tomogram is ``scale * x + offset`` for a zero-mean, unit-std ``x``.
    """

    shape: tuple[int, int, int] = (200, 512, 512)
    voxel_size_A: float = 10.0
    n_particles: int = 300
    slab_thickness_nm: float | None = None
    templates: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    shapes: tuple[str, ...] = SHAPES
    tilt_range_deg: float = 60.0
    tilt_step_deg: float = 3.0
    snr: float | None = 0.1
    ctf: bool = True
    defocus_um: float = 3.0
    phase_flip: bool = True
    n_membranes: int = 0
    n_fiducials: int = 0
    noise_slope: float = 0.0
    astigmatism_um: float = 0.0
    astigmatism_angle_deg: float = 0.0
    defocus_gradient: bool = False
    n_distractors: int = 0
    distractor_templates: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    distractor_shapes: tuple[str, ...] = SHAPES
    outside_material: bool = False
    alignment_shift_px: float = 0.0
    alignment_rotation_deg: float = 0.0
    intensity_scale: float = 1.0
    intensity_offset: float = 0.0

    def tilt_angles(self) -> np.ndarray:
        """The tilt angles in degrees."""
        n = round(2 * self.tilt_range_deg / self.tilt_step_deg)
        return np.linspace(-self.tilt_range_deg, self.tilt_range_deg, n + 1)

    def summary(self) -> dict:
        """YAML-friendly record of the options (template maps by name only)."""
        maps = ("templates", "distractor_templates")
        out = {k: v for k, v in self.__dict__.items() if k not in maps}
        for k in maps:
            out[k] = sorted(getattr(self, k))
        return out


@dataclass
class SimulatedTomogram:
    """A simulated tomogram and its ground truth.

    Attributes
    ----------
    tomogram
        ``(z, y, x)`` float32 reconstruction, protein dark, zero mean, unit std.
    voxel_size_A
        Voxel size in Å.
    particles
        ``class, name, x, y, z, rot, tilt, psi``: class 1-based, centres in voxels,
        ZYZ Euler angles (RELION ``rot, tilt, psi``) in degrees.
    occupancy
        ``(z, y, x)`` int32, each particle's voxels labeled with its id (row index + 1),
        each distractor's with minus its row index + 1 in ``distractors``.
    class_names
        ``class_names[c - 1]`` is the name of class ``c``.
    density
        The clean ``(z, y, x)`` phantom (mass density, protein bright).
    tilt_series
        ``(n_tilts, y, x)`` recorded images.
    angles_deg
        Tilt angles.
    radii
        Per class radius in voxels (``{class: r}``), for evaluation.
    n_requested
        Particles asked for.
    distractors
        ``kind, name, x, y, z, radius, rot, tilt, psi``: membranes, gold beads and
        non-annotated proteins in the field of view (voxels, degrees).
    """

    tomogram: np.ndarray
    voxel_size_A: float
    particles: pd.DataFrame
    occupancy: np.ndarray
    class_names: list[str]
    density: np.ndarray
    tilt_series: np.ndarray
    angles_deg: np.ndarray
    radii: dict[int, float] = field(default_factory=dict)
    n_requested: int = 0
    distractors: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=DISTRACTOR_COLUMNS)
    )


def load_templates(
    folder: str | os.PathLike, classes: Sequence[str] | None = None
) -> dict[str, tuple[np.ndarray, float]]:
    """Read template density maps (``<name>.mrc``) from a folder.

    Parameters
    ----------
    folder
        Folder of MRC maps named by class (PDB id), protein density positive.
    classes
        Names to keep (e.g. ``["4v94", "4cr2"]``); ``None`` keeps all.

    Returns
    -------
    dict
        ``{name: (density (z, y, x), voxel_size_A)}`` in the order of ``classes`` (or sorted).

    Raises
    ------
    InputError
        Missing folder, no maps, a class without a map, or a map without a voxel size.
    """
    from cryoscout.errors import InputError
    from cryoscout.io.mrc import read_mrc

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "template folder not found")
    files = {p.stem: p for p in sorted(folder.glob("*.mrc"))}
    if not files:
        raise InputError(folder, "no .mrc template maps in this folder")
    names = list(classes) if classes else sorted(files)
    out = {}
    for name in names:
        if name not in files:
            raise InputError(
                folder, f"no template for class {name!r} (have: {', '.join(sorted(files))})"
            )
        data, voxel = read_mrc(files[name])
        if data.ndim != 3:
            raise InputError(files[name], "a template must be a 3D map")
        if voxel is None:
            raise InputError(files[name], "the map header has no voxel size")
        out[name] = (data.astype(np.float32), voxel)
    return out


def simulate_tomogram(
    config: TomogramConfig,
    seed: int | np.random.Generator,
    progress: Callable | None = None,
) -> SimulatedTomogram:
    """Simulate a tomogram with ground truth.

    Parameters
    ----------
    config
        What to simulate.
    seed
        Seed (or generator); the same seed gives the same tomogram.
    progress
        Optional ``progress(iterable, desc, total)`` wrapper for the particle placement.

    Returns
    -------
    SimulatedTomogram

    Examples
    --------
    >>> cfg = TomogramConfig(shape=(64, 128, 128), n_particles=20)
    >>> sim = simulate_tomogram(cfg, seed=0)  # doctest: +SKIP
    >>> sim.tomogram.shape
    (64, 128, 128)
    """
    from cryoscout.io.validate import check_memory
    from cryoscout.simulate.tomo_imaging import image_tilt_series, weighted_backprojection

    # Density, labels, occupancy, the reconstruction and its temporaries: ~48 bytes a voxel.
    nz, ny, nx = config.shape
    check_memory("--shape", f"a {nx} x {ny} x {nz} voxel tomogram", 48.0 * nx * ny * nz)
    rng = np.random.default_rng(seed)
    if config.templates:
        templates = [
            prepare_template(name, dens, vox, config.voxel_size_A)
            for name, (dens, vox) in config.templates.items()
        ]
    else:
        templates = [procedural_template(s, config.voxel_size_A) for s in config.shapes]
    others = []
    if config.n_distractors > 0:
        if config.distractor_templates:
            others = [
                prepare_template(name, dens, vox, config.voxel_size_A)
                for name, (dens, vox) in config.distractor_templates.items()
            ]
        else:
            others = [procedural_template(s, config.voxel_size_A) for s in config.distractor_shapes]
    nz = config.shape[0]
    thickness = (
        0.8 * nz
        if config.slab_thickness_nm is None
        else config.slab_thickness_nm * 10 / config.voxel_size_A
    )
    phantom = build_phantom(
        config.shape,
        templates,
        config.n_particles,
        rng,
        slab_thickness_vox=thickness,
        n_membranes=config.n_membranes,
        n_fiducials=config.n_fiducials,
        voxel_size_A=config.voxel_size_A,
        progress=progress,
        distractors=others,
        n_distractors=config.n_distractors,
    )
    angles = config.tilt_angles()
    density = phantom.density
    if config.outside_material:
        density = _with_outside_material(config, density, templates, others, thickness, rng)
    images, _, op = image_tilt_series(
        density,
        angles,
        config.voxel_size_A,
        rng,
        snr=config.snr,
        ctf=config.ctf,
        defocus_um=config.defocus_um,
        phase_flip=config.phase_flip,
        astigmatism_um=config.astigmatism_um,
        astigmatism_angle_deg=config.astigmatism_angle_deg,
        defocus_gradient=config.defocus_gradient,
        noise_slope=config.noise_slope,
        detector_nx=config.shape[2],
        alignment_shift_px=config.alignment_shift_px,
        alignment_rotation_deg=config.alignment_rotation_deg,
    )
    tomo = weighted_backprojection(images, nz, op)
    tomo -= tomo.mean()
    tomo /= tomo.std() + 1e-12
    if config.intensity_scale != 1 or config.intensity_offset != 0:
        tomo = tomo * config.intensity_scale + config.intensity_offset
    radii = {i + 1: t.radius for i, t in enumerate(templates)}
    return SimulatedTomogram(
        tomogram=tomo.astype(np.float32),
        voxel_size_A=config.voxel_size_A,
        particles=phantom.particles,
        occupancy=phantom.occupancy,
        class_names=phantom.class_names,
        density=phantom.density,
        tilt_series=images,
        angles_deg=angles,
        radii=radii,
        n_requested=config.n_particles,
        distractors=phantom.distractors,
    )


def _with_outside_material(
    config: TomogramConfig,
    density: np.ndarray,
    templates: list[Template],
    others: list[Template],
    thickness: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Extend the specimen beyond the field of view in x (across the tilt axis).

    Each side gets the slab continued over the width that the steepest beam crosses
    (``nz / 2 * tan(max tilt)``), with particles, distractors, gold and vesicles at the
    field of view's density (counts drawn from a Poisson law). None of it is in the
    truth: it is outside the reconstructed volume.
    """
    nz, ny, nx = config.shape
    pad = int(np.ceil(nz / 2 * np.tan(np.radians(min(config.tilt_range_deg, 80.0))))) + 2
    if pad < 3:
        return density
    frac = pad / nx
    sides = []
    for _ in range(2):
        side = build_phantom(
            (nz, ny, pad),
            templates,
            int(rng.poisson(config.n_particles * frac)),
            rng,
            slab_thickness_vox=thickness,
            n_membranes=int(rng.poisson(config.n_membranes * frac)),
            n_fiducials=int(rng.poisson(config.n_fiducials * frac)),
            voxel_size_A=config.voxel_size_A,
            distractors=others,
            n_distractors=int(rng.poisson(config.n_distractors * frac)),
        )
        sides.append(side.density)
    return np.concatenate([sides[0], density, sides[1]], axis=2)


def write_simulated_tomogram(sim: SimulatedTomogram, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``tomogram.mrc``, ``occupancy.mrc``, ``particles.csv``, ``classes.csv`` and
    ``distractors.csv``.

    Every file is written atomically; ``classes.csv`` holds ``class, name, radius_vox``;
    ``occupancy.mrc`` is int16 (float32 beyond 32767 particles), negative on distractors;
    ``distractors.csv`` lists what is there but not annotated (see
    :class:`SimulatedTomogram`), so false picks on it can be counted.

    Returns
    -------
    dict
        ``{"tomogram", "occupancy", "particles", "classes", "distractors"}`` -> path.
    """
    from cryoscout.io.atomic import atomic_path
    from cryoscout.io.mrc import write_mrc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "tomogram": write_mrc(out / "tomogram.mrc", sim.tomogram, sim.voxel_size_A),
        # MRC has no int32 mode: int16 holds up to 32767 ids, float32 is exact beyond.
        "occupancy": write_mrc(
            out / "occupancy.mrc",
            sim.occupancy.astype(
                np.int16
                if sim.occupancy.max() < 2**15 and sim.occupancy.min() > -(2**15)
                else np.float32
            ),
            sim.voxel_size_A,
        ),
    }
    with atomic_path(out / "particles.csv") as tmp:
        sim.particles.to_csv(tmp, index=False, float_format="%.3f")
    paths["particles"] = out / "particles.csv"
    classes = pd.DataFrame(
        {
            "class": range(1, len(sim.class_names) + 1),
            "name": sim.class_names,
            "radius_vox": [
                round(sim.radii.get(i + 1, 0.0), 2) for i in range(len(sim.class_names))
            ],
        }
    )
    with atomic_path(out / "classes.csv") as tmp:
        classes.to_csv(tmp, index=False)
    paths["classes"] = out / "classes.csv"
    with atomic_path(out / "distractors.csv") as tmp:
        sim.distractors.to_csv(tmp, index=False, float_format="%.3f")
    paths["distractors"] = out / "distractors.csv"
    return paths
