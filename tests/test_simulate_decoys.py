"""Size decoys: the annotated species enlarged, as negatives (simulate.tomo_decoys)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.simulate.tomo_decoys import SCALE_RANGE, enlarged_maps
from cryoscout.simulate.tomo_phantom import prepare_template, template_radius
from cryoscout.simulate.tomogram import TomogramConfig, simulate_tomogram


def _ellipsoid(axes: tuple[float, float, float], n: int = 31) -> np.ndarray:
    """An elongated blob of protein density (max 1): a shape, not a ball."""
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r2 = (z / axes[0]) ** 2 + (y / axes[1]) ** 2 + (x / axes[2]) ** 2
    return np.clip(1.0 - r2**2, 0, None).astype(np.float32)


MAPS = {"long": (_ellipsoid((8.0, 4.0, 4.0)), 10.0), "flat": (_ellipsoid((3.0, 7.0, 7.0)), 10.0)}


def test_each_map_gets_one_decoy_at_a_scale_in_range_and_the_seed_fixes_it():
    decoys = enlarged_maps(MAPS, rng=0)
    assert len(decoys) == len(MAPS)
    pairs = zip(MAPS.items(), decoys.items(), strict=True)
    for (name, (dens, vox)), (decoy, (ddens, dvox)) in pairs:
        prefix, scale = decoy.rsplit("-x", 1)
        assert prefix == name
        assert SCALE_RANGE[0] <= dvox / vox <= SCALE_RANGE[1]
        assert float(scale) == pytest.approx(dvox / vox, abs=0.005)
        assert ddens is dens  # the density itself is untouched
    assert enlarged_maps(MAPS, rng=0) == decoys
    other = enlarged_maps(MAPS, rng=1)
    assert [v for _, v in other.values()] != [v for _, v in decoys.values()]


def test_a_decoy_renders_larger_by_its_scale_with_the_same_shape():
    dens, vox = MAPS["long"]
    ((decoy_dens, decoy_vox),) = enlarged_maps({"long": MAPS["long"]}, rng=3).values()
    scale = decoy_vox / vox
    target = prepare_template("long", dens, vox, 10.0).density
    decoy = prepare_template("long-x", decoy_dens, decoy_vox, 10.0).density
    # Same protein density over a larger volume: radius x scale, mass x scale^3.
    assert template_radius(decoy) == pytest.approx(scale * template_radius(target), rel=0.08)
    assert decoy.sum() == pytest.approx(scale**3 * target.sum(), rel=0.08)

    # Still elongated along z: the shape is the target's.
    def spread(d):
        idx = np.argwhere(d > 0.2)
        return np.ptp(idx, axis=0)

    sz, _, sx = spread(decoy)
    tz, _, tx = spread(target)
    assert sz / sx == pytest.approx(tz / tx, rel=0.15) and sz > 1.5 * sx


@pytest.mark.parametrize("scales", [(0.8, 1.2), (1.0, 1.5), (1.6, 1.3)])
def test_scales_not_above_one_are_refused(scales):
    with pytest.raises(ValueError, match="above 1"):
        enlarged_maps(MAPS, rng=0, scale_range=scales)


def test_decoys_are_unannotated_distractors_of_a_simulated_tomogram():
    decoys = enlarged_maps(MAPS, rng=0)
    sim = simulate_tomogram(
        TomogramConfig(
            shape=(48, 112, 112),
            voxel_size_A=10.0,
            n_particles=4,
            templates=MAPS,
            n_distractors=8,
            distractor_templates=decoys,
        ),
        seed=0,
    )
    prot = sim.distractors[sim.distractors["kind"] == "protein"]
    assert len(prot) and set(prot["name"]) <= set(decoys)
    assert not set(sim.particles["name"]) & set(decoys)
    # Each placed decoy is recorded at its enlarged radius, larger than its target's.
    for name, radius in prot.groupby("name")["radius"].first().items():
        target = name.rsplit("-x", 1)[0]
        assert radius > 1.2 * sim.radii[list(MAPS).index(target) + 1]
