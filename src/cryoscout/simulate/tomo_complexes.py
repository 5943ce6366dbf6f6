"""Non-annotated complexes assembled from subunit maps: large distractors of new shapes.

A picker trained on tomograms whose only non-annotated proteins are small learns that
anything as large as its targets is a target, and then picks every large complex of a
new sample (BENCHMARKS.md, "Picking under domain shift": a mixture model shown only
sub-MDa negatives labelled 10 of 11 yeast mitoribosomes 4cr2). Real cells hold many
large assemblies; :func:`assemble_complex` builds one by packing randomly rotated
subunit maps against each other, so a training set can show the network large
negatives of as many shapes as it likes, each tomogram its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cryoscout.simulate.tomo_phantom import rotate_template, template_radius

# Subunits touch at this fraction of the sum of their radii (maps are not spheres, so
# centres a little closer than touching spheres pack them face to face).
CONTACT = 0.8
# Places tried per subunit (compact: all, for the one nearest the middle; branched: up to
# the first clash-free one); with none clash-free the subunit is left out.
TRIES = 50
# Subunits per complex (inclusive): from the SHREC maps' small species (0.02-0.15 of
# 4v94's mass), complexes of 0.6-2.3 times 4cr2's mass on average.
SUBUNIT_RANGE = (6, 24)
PACKINGS = ("compact", "branched")


def assemble_complex(
    subunits: Mapping[str, tuple[np.ndarray, float]],
    n_subunits: int,
    rng: np.random.Generator | int,
    packing: str = "compact",
) -> tuple[np.ndarray, float]:
    """A complex of ``n_subunits`` randomly rotated subunits packed against each other.

    Each subunit after the first is drawn (with replacement) from ``subunits``, rotated
    at random and placed touching a randomly chosen one already in place, in a random
    direction, where it clashes with none of the others; densities add. ``compact``
    packing tries :data:`TRIES` such places and takes the one nearest the complex's
    centre, so the complex grows as a globule, as most large assemblies are; ``branched``
    takes the first, so it grows as a loose, branching chain.

    Parameters
    ----------
    subunits
        ``{name: (density (z, y, x), voxel_size_A)}`` as
        :func:`~cryoscout.simulate.tomogram.load_templates` returns; every map must
        have the same voxel size.
    n_subunits
        Subunits to pack (1 or more). Fewer end up in the complex when no clash-free
        place is found in :data:`TRIES` tries.
    rng
        Generator or seed.
    packing
        ``compact`` or ``branched``.

    Returns
    -------
    density, voxel_size_A
        The complex's map (protein positive), at the subunits' voxel size.

    Raises
    ------
    ValueError
        No subunits, ``n_subunits`` < 1, subunits of different voxel sizes, or an
        unknown packing.
    """
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, not {packing!r}")
    if not subunits:
        raise ValueError("a complex needs at least one subunit map")
    if n_subunits < 1:
        raise ValueError(f"a complex needs at least one subunit, not {n_subunits}")
    voxels = {float(v) for _, v in subunits.values()}
    if len(voxels) != 1:
        raise ValueError(f"subunit maps differ in voxel size: {sorted(voxels)} Å")
    rng = np.random.default_rng(rng)
    maps = [_cube(np.clip(np.asarray(d, np.float32), 0, None)) for d, _ in subunits.values()]
    radii = [template_radius(m) for m in maps]
    placed: list[tuple[np.ndarray, np.ndarray, float]] = []  # (cube, centre, radius)
    for _ in range(n_subunits):
        k = int(rng.integers(len(maps)))
        cube = rotate_template(maps[k], *rng.uniform([-180, 0, -180], [180, 180, 180]))
        if not placed:
            placed.append((cube, np.zeros(3), radii[k]))
            continue
        middle = np.mean([c for _, c, _ in placed], axis=0)
        best = None
        for _try in range(TRIES):
            _, anchor, r_anchor = placed[int(rng.integers(len(placed)))]
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            centre = anchor + direction * CONTACT * (r_anchor + radii[k])
            clash = any(
                np.linalg.norm(centre - c) < CONTACT * (r + radii[k]) - 1e-6 for _, c, r in placed
            )
            if clash:
                continue
            if best is None or np.linalg.norm(centre - middle) < np.linalg.norm(best - middle):
                best = centre
            if packing == "branched":
                break
        if best is not None:
            placed.append((cube, best, radii[k]))
    return _render(placed), voxels.pop()


def _cube(density: np.ndarray) -> np.ndarray:
    """Pad a map to an odd cube whose centre voxel is its centre of mass, rotation-safe."""
    from scipy import ndimage

    com = np.array(ndimage.center_of_mass(density))
    idx = np.argwhere(density > 0.02 * density.max())
    half = int(np.ceil(np.sqrt(((idx - com) ** 2).sum(1)).max())) + 2
    n = 2 * half + 1
    padded = np.pad(density, [(0, max(0, n - s)) for s in density.shape])
    return ndimage.shift(padded, half - com, order=1, mode="constant")[:n, :n, :n]


def _render(placed: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Add the placed cubes into one map at their (rounded) centres."""
    centres = np.array([np.round(c) for _, c, _ in placed], dtype=int)
    halves = np.array([cube.shape[0] // 2 for cube, _, _ in placed])
    lo = (centres - halves[:, None]).min(0)
    hi = (centres + halves[:, None]).max(0) + 1
    out = np.zeros(tuple(hi - lo), np.float32)
    for (cube, _, _), c, h in zip(placed, centres, halves, strict=True):
        z, y, x = c - h - lo
        n = cube.shape[0]
        out[z : z + n, y : y + n, x : x + n] += cube
    return out


def complex_maps(
    subunits: Mapping[str, tuple[np.ndarray, float]],
    n_complexes: int,
    rng: np.random.Generator | int | list[int],
    subunit_range: tuple[int, int] = SUBUNIT_RANGE,
    packing: str = "compact",
    prefix: str = "complex",
) -> dict[str, tuple[np.ndarray, float]]:
    """Several complexes, each of a random number of subunits, named for a simulator.

    Parameters
    ----------
    subunits
        As :func:`assemble_complex`.
    n_complexes
        How many.
    rng
        Generator or seed (the same seed gives the same complexes).
    subunit_range
        Inclusive range of the number of subunits of each.
    packing
        As :func:`assemble_complex`.
    prefix
        Names are ``<prefix>-<i>-<n subunits>``.

    Returns
    -------
    dict
        ``{name: (density, voxel_size_A)}``, ready for ``TomogramConfig``'s
        ``distractor_templates``.
    """
    rng = np.random.default_rng(rng)
    lo, hi = subunit_range
    out = {}
    for i in range(n_complexes):
        n = int(rng.integers(lo, hi + 1))
        out[f"{prefix}-{i}-{n}"] = assemble_complex(subunits, n, rng, packing)
    return out
