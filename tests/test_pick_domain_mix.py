"""Training for a picker that survives another microscope: mixture draws, negative patches."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from cryoscout.picking.data import (
    Augmentation,
    PatchDataset,
    distractor_points,
    prepare_tomogram,
)
from cryoscout.simulate.tomo_domains import DomainRanges, draw_domain, randomize_domain
from cryoscout.simulate.tomogram import TomogramConfig, simulate_tomogram


def test_mixture_draws_are_reproducible_by_seed_and_stay_in_their_ranges():
    assert draw_domain(7) == draw_domain(7)
    assert draw_domain(7) != draw_domain(8)
    r = DomainRanges()
    draws = [draw_domain(s) for s in range(200)]
    for key in ("noise_slope", "defocus_um", "astigmatism_um", "alignment_shift_px"):
        values = [d[key] for d in draws]
        lo, hi = getattr(r, key)
        assert lo <= min(values) and max(values) <= hi
        assert max(values) - min(values) > 0.8 * (hi - lo)  # the range is spanned
    snr = np.log([d["snr"] for d in draws])
    assert np.log(r.snr[0]) <= snr.min() and snr.max() <= np.log(r.snr[1])
    # Offsets are in units of the scale, so float32 keeps the signal's precision.
    assert all(abs(d["intensity_offset"]) <= 100 * d["intensity_scale"] for d in draws)
    for switch, p in (("defocus_gradient", 0.5), ("outside_material", 0.5)):
        assert abs(np.mean([d[switch] for d in draws]) - p) < 0.12
    counts = [d["n_fiducials"] for d in draws]
    assert set(counts) == set(range(r.n_fiducials[0], r.n_fiducials[1] + 1))


def test_randomize_domain_sets_a_drawn_setting_and_leaves_the_rest():
    base = TomogramConfig(shape=(32, 48, 48), n_particles=3, voxel_size_A=20.0)
    fixed = DomainRanges(snr=(0.05, 0.05), noise_slope=(1.0, 1.0), n_membranes=(2, 2))
    cfg = randomize_domain(base, 3, fixed)
    assert cfg.snr == pytest.approx(0.05) and cfg.noise_slope == 1.0 and cfg.n_membranes == 2
    assert (cfg.shape, cfg.n_particles, cfg.voxel_size_A) == (base.shape, 3, 20.0)
    assert base.snr == 0.1 and base.n_membranes == 0  # the input is not modified
    assert randomize_domain(base, 3, fixed) == cfg
    assert {f.name for f in dataclasses.fields(cfg)} >= set(draw_domain(0))


def _scene(with_negative: bool = True, negatives: pd.DataFrame | None = None):
    """A 64³ volume: one particle near a corner, one bright distractor near the other.

    ``negatives``: the table of negatives to give instead of the simulator-style one.
    """
    particles = pd.DataFrame({"class": [1], "x": [16.0], "y": [16.0], "z": [16.0]})
    distractors = pd.DataFrame(
        {"kind": ["gold"], "name": ["gold"], "x": [48.0], "y": [48.0], "z": [48.0], "radius": [2.5]}
    )
    vol = np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32)
    vol[45:52, 45:52, 45:52] += 50.0  # clipped at 5 after normalisation
    if negatives is not None:
        distractors = negatives
    return prepare_tomogram(vol, particles, 3.0, distractors=distractors if with_negative else None)


def test_distractor_patches_show_the_distractor_and_no_particle_label():
    tomo = _scene()
    assert tomo.negatives.tolist() == [[48.0, 48.0, 48.0]]
    for aug in (None, Augmentation()):
        ds = PatchDataset(
            [tomo],
            patch_size=16,
            background_fraction=0.0,
            distractor_fraction=1.0,
            augmentation=aug,
            samples_per_epoch=20,
        )
        for i in range(len(ds)):
            image, labels = ds[i]
            assert labels.sum() == 0  # the particle is never in a distractor patch
            assert image.max() > 3.0  # the bright bead is
    # Shares follow the fractions; particle patches carry the particle's label.
    ds = PatchDataset([tomo], patch_size=16, background_fraction=0.25, distractor_fraction=0.25)
    kinds = Counter(ds.draw(np.random.default_rng(s))[2] for s in range(2000))
    assert abs(kinds["distractor"] / 2000 - 0.25) < 0.04
    assert abs(kinds["background"] / 2000 - 0.25) < 0.04
    for s in range(20):
        _, centre, kind = ds.draw(np.random.default_rng(s))
        if kind == "particle":
            assert np.abs(centre - 16).max() <= 4  # within a quarter patch of it


def test_without_distractor_fraction_known_distractors_change_no_patch():
    a = PatchDataset([_scene(True)], patch_size=16, augmentation=Augmentation(), seed=3)
    b = PatchDataset([_scene(False)], patch_size=16, augmentation=Augmentation(), seed=3)
    for i in range(8):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
    with pytest.raises(ValueError, match="fraction"):
        PatchDataset([_scene()], background_fraction=0.8, distractor_fraction=0.3)


def test_distractor_points_lie_on_the_simulated_distractors():
    cfg = TomogramConfig(
        shape=(40, 80, 80),
        n_particles=4,
        shapes=("sphere",),
        n_distractors=4,
        distractor_shapes=("ellipsoid",),
        n_fiducials=2,
        n_membranes=1,
        voxel_size_A=20.0,
        snr=None,
        tilt_step_deg=10.0,
    )
    sim = simulate_tomogram(cfg, seed=5)
    kinds = Counter(sim.distractors["kind"])
    assert kinds["membrane"] == 1 and kinds["gold"] == 2
    points = distractor_points(sim.distractors, sim.tomogram.shape)
    # Proteins and gold give their centre; the vesicle up to 12 points on its shell.
    assert kinds["gold"] + kinds["protein"] < len(points) <= len(sim.distractors) + 11
    occ = np.pad(sim.occupancy, 1)
    for z, y, x in np.rint(points).astype(int) + 1:
        assert (occ[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] < 0).any()
        assert not (occ[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] > 0).all()


def test_negatives_from_a_file_centre_patches_without_particle_labels(tmp_path):
    from cryoscout.io.coords import read_coords

    # A user's negatives: x, y, z only (any class column is ignored), read like picks.
    path = tmp_path / "negatives.csv"
    pd.DataFrame({"x": [48.0], "y": [48.0], "z": [48.0]}).to_csv(path, index=False)
    tomo = _scene(negatives=read_coords(path, shape=(64, 64, 64)))
    assert tomo.negatives.tolist() == [[48.0, 48.0, 48.0]]
    ds = PatchDataset([tomo], patch_size=16, background_fraction=0.0, distractor_fraction=1.0)
    for i in range(10):
        image, labels = ds[i]
        assert labels.sum() == 0 and image.max() > 3.0  # the bead, never the particle
