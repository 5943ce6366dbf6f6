"""Non-annotated complexes assembled from subunit maps (simulate.tomo_complexes)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryoscout.simulate.tomo_complexes import assemble_complex, complex_maps
from cryoscout.simulate.tomogram import TomogramConfig, simulate_tomogram


def _blob(radius: float, n: int = 21) -> np.ndarray:
    """A smooth ball of protein density (max 1)."""
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r = np.sqrt(z**2 + y**2 + x**2)
    return np.clip(1.0 - (r / radius) ** 4, 0, None).astype(np.float32)


SUBUNITS = {"small": (_blob(4.0), 10.0), "large": (_blob(6.0, 25), 10.0)}


def test_a_complex_holds_the_mass_of_its_subunits_in_one_body():
    masses = {k: float(d.sum()) for k, (d, _) in SUBUNITS.items()}
    one, voxel = assemble_complex({"large": SUBUNITS["large"]}, 1, rng=0)
    assert voxel == 10.0
    assert one.sum() == pytest.approx(masses["large"], rel=0.03)
    six, _ = assemble_complex({"large": SUBUNITS["large"]}, 6, rng=0)
    # Six copies of the same subunit: six times its mass (rotation interpolates, so
    # a little is smeared, none is lost or made), in one connected body.
    assert six.sum() == pytest.approx(6 * masses["large"], rel=0.03)
    _, n_bodies = ndimage.label(six > 0.1)
    assert n_bodies == 1

    # Packed, not stacked: its extent is well beyond one subunit's, and no voxel holds
    # more than two subunits' worth of density (touching, not overlapping).
    def extent(d):
        return max(np.ptp(np.argwhere(d > 0.1), axis=0)) + 1

    assert extent(six) > 1.5 * extent(one)
    assert six.max() < 2.0


def test_mixed_subunits_sum_to_one_of_each_possible_total():
    masses = sorted(float(d.sum()) for d, _ in SUBUNITS.values())
    dens, _ = assemble_complex(SUBUNITS, 5, rng=3)
    totals = [k * masses[1] + (5 - k) * masses[0] for k in range(6)]
    assert min(abs(dens.sum() - t) / t for t in totals) < 0.03


def _gyration_radius(d: np.ndarray) -> float:
    idx = np.argwhere(d > 0.1)
    return float(np.sqrt(((idx - idx.mean(0)) ** 2).sum(1).mean()))


def test_compact_packing_makes_globules_and_branched_makes_chains():
    one = {"large": SUBUNITS["large"]}
    rg = {
        packing: np.mean(
            [_gyration_radius(assemble_complex(one, 12, seed, packing)[0]) for seed in range(4)]
        )
        for packing in ("compact", "branched")
    }
    # Twelve touching balls: packed towards their middle they span less than as a random
    # branching chain (gyration radius 0.74 of the chain's over these seeds).
    assert rg["compact"] < 0.85 * rg["branched"]


def test_same_seed_same_complex_other_seed_differs():
    a, _ = assemble_complex(SUBUNITS, 4, rng=7)
    b, _ = assemble_complex(SUBUNITS, 4, rng=7)
    c, _ = assemble_complex(SUBUNITS, 4, rng=8)
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.allclose(a, c)


@pytest.mark.parametrize(
    ("subunits", "n", "message"),
    [
        ({}, 3, "at least one subunit map"),
        (SUBUNITS, 0, "at least one subunit, not 0"),
        ({"a": (_blob(4.0), 10.0), "b": (_blob(4.0), 20.0)}, 2, "differ in voxel size"),
    ],
)
def test_bad_requests_are_refused(subunits, n, message):
    with pytest.raises(ValueError, match=message):
        assemble_complex(subunits, n, rng=0)
    with pytest.raises(ValueError, match="packing must be one of"):
        assemble_complex(SUBUNITS, 2, rng=0, packing="loose")


def test_complex_maps_are_named_by_their_subunit_count_and_reproducible():
    maps = complex_maps(SUBUNITS, 3, rng=1, subunit_range=(2, 5))
    again = complex_maps(SUBUNITS, 3, rng=1, subunit_range=(2, 5))
    assert list(maps) == list(again)
    assert len(maps) == 3
    mass = {float(d.sum()) for d, _ in SUBUNITS.values()}
    for name, (dens, voxel) in maps.items():
        prefix, _, n = name.split("-")
        assert prefix == "complex" and 2 <= int(n) <= 5
        assert voxel == 10.0
        # No fewer than n subunits' worth of the smallest, no more than n of the largest.
        assert 0.97 * int(n) * min(mass) <= dens.sum() <= 1.03 * int(n) * max(mass)
        assert np.array_equal(dens, again[name][0])


def test_complexes_are_distractors_of_a_simulated_tomogram():
    maps = complex_maps(SUBUNITS, 2, rng=0, subunit_range=(3, 4))
    sim = simulate_tomogram(
        TomogramConfig(
            shape=(32, 96, 96),
            voxel_size_A=10.0,
            n_particles=4,
            n_distractors=6,
            distractor_templates=maps,
        ),
        seed=0,
    )
    names = set(sim.distractors.loc[sim.distractors["kind"] == "protein", "name"])
    assert names and names <= set(maps)
    assert not set(sim.particles["name"]) & set(maps)
