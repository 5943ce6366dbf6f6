"""The tomogram simulator: determinism, truth, missing wedge, files."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.simulate.tomogram import (
    TomogramConfig,
    load_templates,
    simulate_tomogram,
    template_radius,
)

SMALL = dict(shape=(48, 96, 96), n_particles=12, tilt_step_deg=5.0)


@pytest.fixture(scope="module")
def clean_sim():
    """Spheres, no CTF, no noise: truth can be read straight off the volumes."""
    cfg = TomogramConfig(**SMALL, shapes=("sphere",), snr=None, ctf=False)
    return simulate_tomogram(cfg, seed=3)


def test_same_seed_same_tomogram_other_seed_differs():
    cfg = TomogramConfig(**SMALL)
    a, b = simulate_tomogram(cfg, seed=1), simulate_tomogram(cfg, seed=1)
    c = simulate_tomogram(cfg, seed=2)
    assert np.array_equal(a.tomogram, b.tomogram)
    assert a.particles.equals(b.particles)
    assert not np.array_equal(a.tomogram, c.tomogram)


def test_particle_count_ids_and_no_overlap(clean_sim):
    sim = clean_sim
    assert len(sim.particles) == 12
    assert list(sim.particles.columns[:5]) == ["class", "name", "x", "y", "z"]
    assert {"rot", "tilt", "psi"} <= set(sim.particles.columns)
    ids = np.unique(sim.occupancy)
    # One label per particle and nothing else: overlapping particles would lose voxels
    # to each other, so each must also keep its full sphere volume.
    assert ids.tolist() == list(range(0, 13))
    counts = np.bincount(sim.occupancy.ravel())[1:]
    assert counts.min() > 0.8 * counts.max()
    # Each particle's own centre voxel carries its id.
    for i, p in sim.particles.iterrows():
        assert sim.occupancy[int(p.z), int(p.y), int(p.x)] == i + 1


def test_centres_are_density_maxima(clean_sim):
    from scipy import ndimage

    sim = clean_sim
    smooth = ndimage.gaussian_filter(sim.density, 2.0)
    peaks = smooth == ndimage.maximum_filter(smooth, size=7)
    peaks &= smooth > 0.5 * smooth.max()
    found = np.argwhere(peaks)[:, ::-1]  # x, y, z
    for _, p in sim.particles.iterrows():
        d = np.linalg.norm(found - p[["x", "y", "z"]].to_numpy(float), axis=1).min()
        assert d <= 1.0


def test_particles_are_dark_in_the_tomogram(clean_sim):
    sim = clean_sim
    inside = sim.tomogram[sim.occupancy > 0].mean()
    outside = sim.tomogram[sim.occupancy == 0].mean()
    assert inside < outside - 0.5


def test_missing_wedge_elongates_along_z():
    cfg = TomogramConfig(
        shape=(64, 64, 64),
        n_particles=1,
        shapes=("sphere",),
        snr=None,
        ctf=False,
        voxel_size_A=40.0,  # the 80 Å sphere becomes 2 voxels: nearly a point
    )
    sim = simulate_tomogram(cfg, seed=0)
    p = sim.particles.iloc[0]
    z, y, x = int(p.z), int(p.y), int(p.x)
    # Roll the particle to the centre (the volume is periodic enough for this) and crop.
    vol = np.roll(-sim.tomogram, (32 - z, 32 - y, 32 - x), axis=(0, 1, 2))
    box = vol[20:45, 20:45, 20:45]
    box = box - box.mean()
    f = np.fft.fftn(box)
    ac = np.fft.fftshift(np.real(np.fft.ifftn(f * np.conj(f))))
    c = np.array(ac.shape) // 2
    ac /= ac[tuple(c)]

    def width(profile):
        above = profile > 0.5
        i = c[0]
        lo = hi = i
        while lo > 0 and above[lo - 1]:
            lo -= 1
        while hi < len(profile) - 1 and above[hi + 1]:
            hi += 1
        return hi - lo + 1

    wz, wx = width(ac[:, c[1], c[2]]), width(ac[c[0], c[1], :])
    assert wz > wx


def test_templates_are_resampled_and_used(shared_data):
    maps = load_templates(shared_data / "templates_10A", ["4v94", "1bxn"])
    cfg = TomogramConfig(
        shape=(40, 64, 64), n_particles=4, templates=maps, voxel_size_A=20.0, tilt_step_deg=6.0
    )
    sim = simulate_tomogram(cfg, seed=0)
    assert sim.class_names == ["4v94", "1bxn"]
    assert set(sim.particles["name"]) <= {"4v94", "1bxn"}
    # At 20 Å/voxel the ribosome's radius is half of what it is at 10 Å.
    r10 = template_radius(maps["4v94"][0])
    assert sim.radii[1] == pytest.approx(r10 / 2, rel=0.25)
    assert sim.radii[1] > sim.radii[2]


def test_cli_writes_files_with_voxel_size(tmp_path, run_cli):
    import mrcfile
    import pandas as pd

    out = tmp_path / "sim"
    res = run_cli(
        "simulate",
        "tomogram",
        out,
        "--seed",
        "4",
        "--shape",
        "64,64,32",
        "--particles",
        "5",
        "--tilt-step",
        "6",
        "--membranes",
        "1",
        "--fiducials",
        "2",
    )
    assert res.code == 0, res.err
    with mrcfile.open(out / "tomogram.mrc") as m:
        assert m.data.shape == (32, 64, 64)
        assert m.voxel_size.x == pytest.approx(10.0)
    with mrcfile.open(out / "occupancy.mrc") as m:
        occ = np.asarray(m.data)
    parts = pd.read_csv(out / "particles.csv")
    assert len(parts) == occ.max()
    assert (out / "config.yaml").is_file()
    assert not list(out.glob(".*partial*"))


def test_cli_unknown_class_is_one_line_error(tmp_path, run_cli, shared_data):
    res = run_cli(
        "simulate",
        "tomogram",
        tmp_path / "x",
        "--seed",
        "1",
        "--templates",
        shared_data / "templates_10A",
        "--classes",
        "9zzz",
    )
    assert res.code == 1
    assert "9zzz" in res.err and res.err.count("\n") == 1
    assert not (tmp_path / "x" / "tomogram.mrc").exists()
