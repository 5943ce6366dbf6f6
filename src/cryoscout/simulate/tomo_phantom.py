"""The clean 3D density of a simulated tomogram: particles, membranes and gold in a slab.

Density convention: the phantom is *mass density* (protein > 0, vacuum 0), so the
clean volume has particles bright. The imaging step (:mod:`tomo_imaging`) turns it
into what a microscope records, where protein is darker than the ice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Procedural shapes (no templates): sizes in Å so they keep their size at any voxel size.
SHAPES = ("sphere", "ellipsoid", "ring", "dumbbell")
_SHAPE_SIZES_A = {
    "sphere": {"radius": 80.0},
    "ellipsoid": {"semi_axes": (120.0, 70.0, 55.0)},
    "ring": {"major": 85.0, "minor": 35.0},
    "dumbbell": {"radius": 55.0, "separation": 130.0},
}
ICE_DENSITY = 0.15  # relative to protein = 1; vitreous ice is ~0.7 of protein, but
# only the difference matters and a low value keeps the slab edges from dominating
GOLD_DENSITY = 6.0  # gold scatters far more than protein
MEMBRANE_DENSITY = 0.8


@dataclass
class Template:
    """One particle class, ready to place.

    Attributes
    ----------
    name
        PDB id or shape name.
    density
        ``(n, n, n)`` float32 cube, density >= 0 with max 1, centred on its centre of mass
        and padded so that any rotation about the cube centre stays inside.
    threshold
        Density above which a voxel belongs to the particle (occupancy, overlap).
    """

    name: str
    density: np.ndarray
    threshold: float

    @property
    def radius(self) -> float:
        """Half the largest extent (voxels) of the density above ``threshold``."""
        return template_radius(self.density, self.threshold)


def template_radius(density: np.ndarray, threshold: float | None = None) -> float:
    """Radius in voxels of a particle map: largest distance of a voxel above ``threshold``
    from the centre of mass.

    Parameters
    ----------
    density
        ``(z, y, x)`` density, protein positive.
    threshold
        Default: 20% of the maximum.

    Returns
    -------
    float
        Radius in voxels (>= 1).
    """
    d = np.asarray(density, dtype=np.float64)
    thr = 0.2 * d.max() if threshold is None else threshold
    mask = d > thr
    if not mask.any():
        return 1.0
    idx = np.argwhere(mask).astype(np.float64)
    w = d[mask]
    com = (idx * w[:, None]).sum(0) / w.sum()
    return max(1.0, float(np.sqrt(((idx - com) ** 2).sum(1)).max()))


def prepare_template(
    name: str, density: np.ndarray, voxel_size_A: float, target_voxel_A: float
) -> Template:
    """Resample a density map to ``target_voxel_A``, crop it, centre it and normalise it.

    Parameters
    ----------
    name
        Class name (PDB id).
    density
        ``(z, y, x)`` map, protein positive (as the SHREC/polnet maps are).
    voxel_size_A
        Voxel size of ``density``.
    target_voxel_A
        Voxel size of the tomogram to simulate.

    Returns
    -------
    Template
    """
    from scipy import ndimage

    d = np.clip(np.asarray(density, dtype=np.float32), 0, None)
    if d.max() <= 0:
        raise ValueError(f"template {name} has no positive density")
    factor = voxel_size_A / target_voxel_A
    if abs(factor - 1) > 1e-3:
        # Smooth before shrinking so the binned map is not aliased.
        if factor < 1:
            d = ndimage.gaussian_filter(d, sigma=0.5 / factor)
        d = ndimage.zoom(d, factor, order=1)
        d = np.clip(d, 0, None)
    d /= d.max()
    return _centred_cube(name, d, threshold=0.2)


def _centred_cube(name: str, d: np.ndarray, threshold: float) -> Template:
    """Put the centre of mass at the cube centre; pad so rotations never clip."""
    from scipy import ndimage

    mask = d > threshold
    com = np.array(ndimage.center_of_mass(np.where(mask, d, 0)))
    idx = np.argwhere(d > 0.02)  # faint tails still matter for the image
    r = np.sqrt(((idx - com) ** 2).sum(1)).max() if len(idx) else 1.0
    half = int(np.ceil(r)) + 2
    n = 2 * half + 1
    # Shift so that com lands on the centre voxel (half, half, half).
    shift = half - com
    out = ndimage.shift(
        np.pad(d, [(0, max(0, n - s)) for s in d.shape]), shift, order=1, mode="constant"
    )[:n, :n, :n]
    return Template(
        name=name, density=np.ascontiguousarray(out, dtype=np.float32), threshold=threshold
    )


def procedural_template(name: str, voxel_size_A: float) -> Template:
    """A simple shape (``sphere``, ``ellipsoid``, ``ring``, ``dumbbell``) as a template.

    Parameters
    ----------
    name
        One of :data:`SHAPES`.
    voxel_size_A
        Voxel size of the tomogram.

    Returns
    -------
    Template
    """
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    s = {k: np.asarray(v) / voxel_size_A for k, v in _SHAPE_SIZES_A[name].items()}
    if name == "sphere":
        extent = float(s["radius"])
    elif name == "ellipsoid":
        extent = float(np.max(s["semi_axes"]))
    elif name == "ring":
        extent = float(s["major"] + s["minor"])
    else:
        extent = float(s["separation"] / 2 + s["radius"])
    half = int(np.ceil(extent)) + 2
    g = np.arange(-half, half + 1, dtype=np.float32)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    if name == "sphere":
        f = 1 - np.sqrt(x**2 + y**2 + z**2) / s["radius"]
    elif name == "ellipsoid":
        a, b, c = s["semi_axes"]
        f = 1 - np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    elif name == "ring":
        rho = np.sqrt(x**2 + y**2)
        f = 1 - np.sqrt((rho - s["major"]) ** 2 + z**2) / s["minor"]
    else:
        h = s["separation"] / 2
        d1 = np.sqrt((x - h) ** 2 + y**2 + z**2)
        d2 = np.sqrt((x + h) ** 2 + y**2 + z**2)
        neck = np.sqrt(y**2 + z**2) / (0.45 * s["radius"])
        f = np.maximum(1 - np.minimum(d1, d2) / s["radius"], (1 - neck) * (np.abs(x) <= h))
    # Soft edge (about one voxel) so the shape is band-limited like a real map.
    edge = 1.0 / max(extent, 1.0)
    dens = np.clip(f / edge, 0, 1).astype(np.float32)
    return Template(name=name, density=dens, threshold=0.5)


def rotation_matrix_zyx(rot: float, tilt: float, psi: float) -> np.ndarray:
    """Rotation matrix acting on ``(z, y, x)`` index vectors for ZYZ Euler angles in degrees.

    The angles follow the RELION convention (``rot, tilt, psi``, intrinsic ZYZ); the
    matrix maps particle coordinates to tomogram coordinates.
    """
    from scipy.spatial.transform import Rotation

    r_xyz = Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix()
    p = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
    return p @ r_xyz @ p


def rotate_template(density: np.ndarray, rot: float, tilt: float, psi: float) -> np.ndarray:
    """Rotate a cubic template about its centre voxel (trilinear interpolation).

    Parameters
    ----------
    density
        ``(n, n, n)`` cube.
    rot, tilt, psi
        ZYZ Euler angles in degrees.

    Returns
    -------
    numpy.ndarray
        ``(n, n, n)`` rotated cube.
    """
    from scipy import ndimage

    m = rotation_matrix_zyx(rot, tilt, psi)
    c = (np.array(density.shape) - 1) / 2
    # affine_transform pulls: out[o] = in[M o + offset]; M is the inverse rotation.
    minv = m.T
    offset = c - minv @ c
    out = ndimage.affine_transform(density, minv, offset=offset, order=1, mode="constant")
    return np.clip(out, 0, None).astype(np.float32)


DISTRACTOR_COLUMNS = ["kind", "name", "x", "y", "z", "radius", "rot", "tilt", "psi"]


@dataclass
class Phantom:
    """Clean density and ground truth.

    Attributes
    ----------
    density
        ``(z, y, x)`` float32 mass density (protein ~1, ice :data:`ICE_DENSITY`, gold > 1).
    occupancy
        ``(z, y, x)`` int32: particle id (1-based row of ``particles``), minus the 1-based
        row of ``distractors`` on a distractor, or 0.
    particles
        ``class, name, x, y, z, rot, tilt, psi`` (voxels; ZYZ degrees).
    class_names
        Name of class ``i`` at index ``i - 1``.
    n_requested
        Particles asked for; ``len(particles)`` can be lower when the slab is full.
    distractors
        What is in the volume but not in the annotation: ``kind`` (``membrane``, ``gold``
        or ``protein``), ``name``, centre ``x, y, z`` and ``radius`` in voxels (a
        vesicle's shell radius), and ``rot, tilt, psi`` for proteins.
    """

    density: np.ndarray
    occupancy: np.ndarray
    particles: pd.DataFrame
    class_names: list[str]
    n_requested: int = 0
    distractors: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=DISTRACTOR_COLUMNS)
    )


def _slab_bounds(nz: int, thickness_vox: float) -> tuple[int, int]:
    t = round(min(thickness_vox, nz))
    z0 = (nz - t) // 2
    return z0, z0 + t


def _paste(target: np.ndarray, block: np.ndarray, corner: np.ndarray, op: str = "add") -> None:
    """Add (or max) ``block`` into ``target`` at ``corner`` (z, y, x), clipping at edges."""
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + block.shape, target.shape)
    if np.any(hi <= lo):
        return
    t_sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    b_sl = tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner, strict=True))
    if op == "add":
        target[t_sl] += block[b_sl]
    else:
        np.maximum(target[t_sl], block[b_sl], out=target[t_sl])


def _label(occupancy: np.ndarray, mask: np.ndarray, corner: np.ndarray, label: int) -> None:
    """Write ``label`` into ``occupancy`` where ``mask`` (placed at ``corner``) is set."""
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + mask.shape, occupancy.shape)
    if np.any(hi <= lo):
        return
    t_sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    b_sl = tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, corner, strict=True))
    occupancy[t_sl][mask[b_sl]] = label


def _place(
    tpl: Template,
    rng: np.random.Generator,
    density: np.ndarray,
    occupancy: np.ndarray,
    blocked: np.ndarray,
    slab: tuple[int, int],
    label: int,
    max_tries: int,
) -> dict | None:
    """Place one copy of ``tpl`` at a random free position and orientation.

    Returns its ``x, y, z, rot, tilt, psi`` or ``None`` when no free spot was found.
    """
    rot, psi = rng.uniform(-180, 180, size=2)
    tilt = np.degrees(np.arccos(rng.uniform(-1, 1)))  # uniform on the sphere
    dens = rotate_template(tpl.density, rot, tilt, psi)
    mask = dens > tpl.threshold
    half = dens.shape[0] // 2
    shp = np.array(density.shape)
    z0, z1 = slab
    # Centres stay inside the volume in x, y and inside the slab in z (as far as the
    # particle's own extent allows: a thin slab still holds the centre).
    zlo, zhi = z0 + min(half, (z1 - z0) // 2), z1 - min(half, (z1 - z0) // 2)
    for _ in range(max_tries):
        c = np.array(
            [
                rng.integers(zlo, max(zlo + 1, zhi)),
                rng.integers(half, max(half + 1, shp[1] - half)),
                rng.integers(half, max(half + 1, shp[2] - half)),
            ]
        )
        corner = c - half
        lo = np.maximum(corner, 0)
        hi = np.minimum(corner + dens.shape, shp)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        msl = tuple(slice(a - k, b - k) for a, b, k in zip(lo, hi, corner, strict=True))
        m = mask[msl]
        if (occupancy[sl][m] != 0).any() or blocked[sl][m].any():
            continue
        occupancy[sl][m] = label
        # Protein displaces ice: particle density replaces the ice level.
        region = density[sl]
        np.maximum(region, dens[msl], out=region)
        return {
            "x": float(c[2]),
            "y": float(c[1]),
            "z": float(c[0]),
            "rot": float(rot),
            "tilt": float(tilt),
            "psi": float(psi),
        }
    return None


def build_phantom(
    shape: tuple[int, int, int],
    templates: list[Template],
    n_particles: int,
    rng: np.random.Generator,
    slab_thickness_vox: float,
    n_membranes: int = 0,
    n_fiducials: int = 0,
    voxel_size_A: float = 10.0,
    max_tries: int = 60,
    progress=None,
    distractors: list[Template] | None = None,
    n_distractors: int = 0,
) -> Phantom:
    """Place particles at random positions and orientations, without overlap, in a slab.

    Parameters
    ----------
    shape
        ``(z, y, x)`` volume shape.
    templates
        One per class; class ``i`` is ``templates[i - 1]``.
    n_particles
        Number of particles to place (fewer when no free space is found).
    rng
        Random generator (seeded by the caller).
    slab_thickness_vox
        Thickness of the ice slab (voxels), centred in z.
    n_membranes, n_fiducials
        Vesicle-like spherical shells and gold beads (distractors, not in the truth).
    voxel_size_A
        Voxel size; sets membrane and gold sizes.
    max_tries
        Random positions tried per particle before giving up on it.
    progress
        Optional wrapper ``progress(iterable, desc, total)`` (e.g. ``cryoscout.progress.track``).
    distractors
        Templates of proteins that are present but not annotated (other complexes).
    n_distractors
        How many of them to place (classes drawn uniformly), after the particles.

    Returns
    -------
    Phantom
    """
    shape = tuple(int(s) for s in shape)
    density = np.zeros(shape, np.float32)
    occupancy = np.zeros(shape, np.int32)
    blocked = np.zeros(shape, bool)  # membranes and gold: particles must not overlap them
    z0, z1 = _slab_bounds(shape[0], slab_thickness_vox)
    density[z0:z1] = ICE_DENSITY
    others: list[dict] = []

    _add_membranes(density, blocked, occupancy, others, n_membranes, rng, (z0, z1), voxel_size_A)
    _add_fiducials(density, blocked, occupancy, others, n_fiducials, rng, (z0, z1), voxel_size_A)

    rows = []
    classes = rng.integers(1, len(templates) + 1, size=n_particles)
    it = range(n_particles)
    if progress is not None:
        it = progress(it, desc="placing particles", total=n_particles)
    for i in it:
        tpl = templates[classes[i] - 1]
        placed = _place(tpl, rng, density, occupancy, blocked, (z0, z1), len(rows) + 1, max_tries)
        if placed is not None:
            rows.append({"class": int(classes[i]), "name": tpl.name, **placed})
    if distractors and n_distractors > 0:
        kinds = rng.integers(len(distractors), size=n_distractors)
        for k in kinds:
            tpl = distractors[k]
            label = -(len(others) + 1)
            placed = _place(tpl, rng, density, occupancy, blocked, (z0, z1), label, max_tries)
            if placed is not None:
                others.append({"kind": "protein", "name": tpl.name, "radius": tpl.radius, **placed})
    particles = pd.DataFrame(rows, columns=["class", "name", "x", "y", "z", "rot", "tilt", "psi"])
    particles["class"] = particles["class"].astype(int)
    return Phantom(
        density=density,
        occupancy=occupancy,
        particles=particles,
        class_names=[t.name for t in templates],
        n_requested=n_particles,
        distractors=pd.DataFrame(others, columns=DISTRACTOR_COLUMNS),
    )


def _ball_grid(radius: float) -> tuple[np.ndarray, int]:
    half = int(np.ceil(radius)) + 1
    g = np.arange(-half, half + 1, dtype=np.float32)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    return np.sqrt(x**2 + y**2 + z**2), half


def _add_membranes(density, blocked, occupancy, others, n, rng, slab, voxel_size_A) -> None:
    """Vesicles: thin spherical shells (~4 nm bilayer) of radius 20-50 nm inside the slab."""
    thick = 40.0 / voxel_size_A
    for _ in range(n):
        r = rng.uniform(200, 500) / voxel_size_A
        r = min(r, (slab[1] - slab[0]) / 2 - thick - 1)
        if r < 2 * thick:
            continue
        dist, half = _ball_grid(r + thick)
        shell = np.clip(1 - np.abs(dist - r) / (thick / 2), 0, 1) * MEMBRANE_DENSITY
        c = np.array(
            [
                rng.integers(slab[0] + half, max(slab[0] + half + 1, slab[1] - half)),
                rng.integers(0, density.shape[1]),
                rng.integers(0, density.shape[2]),
            ]
        )
        _paste(density, shell.astype(np.float32), c - half, op="max")
        # Keep particles off the membrane itself (they may sit inside the vesicle).
        near = (np.abs(dist - r) < thick).astype(bool)
        blk = np.zeros_like(blocked)
        _paste(blk, near, c - half, op="max")
        blocked |= blk
        others.append(_record("membrane", "vesicle", c, r))
        _label(occupancy, shell > 0.5 * MEMBRANE_DENSITY, c - half, -len(others))


def _add_fiducials(density, blocked, occupancy, others, n, rng, slab, voxel_size_A) -> None:
    """Gold beads: dense solid spheres of 5 nm radius."""
    r = max(1.5, 50.0 / voxel_size_A)
    dist, half = _ball_grid(r)
    bead = np.clip(r + 0.5 - dist, 0, 1).astype(np.float32) * GOLD_DENSITY
    for _ in range(n):
        c = np.array(
            [
                rng.integers(slab[0], max(slab[0] + 1, slab[1])),
                rng.integers(half, density.shape[1] - half),
                rng.integers(half, density.shape[2] - half),
            ]
        )
        _paste(density, bead, c - half, op="max")
        _paste(blocked, dist <= r + 1, c - half, op="max")
        others.append(_record("gold", "gold", c, r))
        _label(occupancy, dist <= r, c - half, -len(others))


def _record(kind: str, name: str, c: np.ndarray, radius: float) -> dict:
    nan = float("nan")
    z, y, x = (float(v) for v in c)
    return {
        "kind": kind,
        "name": name,
        "x": x,
        "y": y,
        "z": z,
        "radius": float(radius),
        "rot": nan,
        "tilt": nan,
        "psi": nan,
    }
