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


# --- What differs between microscopes: each switch has an effect that can be measured. ---

TINY = dict(shape=(32, 64, 64), tilt_step_deg=6.0)


def _radial_power_slope(images: np.ndarray) -> float:
    """Slope of log radial power against log frequency, over (n, y, x) images."""
    f = np.abs(np.fft.rfft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
    ky = np.fft.fftfreq(images.shape[1])[:, None]
    kx = np.fft.rfftfreq(images.shape[2])[None, :]
    k = np.sqrt(ky**2 + kx**2)
    p = f.mean(axis=0)
    ok = (k > 0.05) & (k < 0.45)
    return float(np.polyfit(np.log(k[ok]), np.log(p[ok]), 1)[0])


@pytest.mark.parametrize(("slope", "sign"), [(-1.5, -1), (0.0, 0), (1.5, 1)])
def test_noise_colour_sets_the_slope_of_the_noise_power_spectrum(slope, sign):
    from cryoscout.simulate.tomo_imaging import image_tilt_series

    rng = np.random.default_rng(0)
    density = rng.random((16, 48, 48)).astype(np.float32)
    angles = np.array([-30.0, 0.0, 30.0])
    images, clean, _ = image_tilt_series(
        density, angles, 10.0, rng, snr=0.5, ctf=False, noise_slope=slope
    )
    measured = _radial_power_slope(images - clean)
    if sign == 0:
        assert abs(measured) < 0.2
    else:
        assert measured * sign > 0.8 * abs(slope)
    # The SNR keeps its meaning: noise variance = signal variance / snr.
    assert (images - clean).var() == pytest.approx(clean.var() / 0.5, rel=0.06)


def test_astigmatism_makes_thon_rings_elliptical():
    from cryoscout.simulate.tomo_imaging import ctf_2d

    n = 256
    round_ = ctf_2d((n, n), 2.0, 2.0)
    astig = ctf_2d((n, n), 2.0, 2.0, astigmatism_um=0.6, astigmatism_angle_deg=0.0)

    def first_zero(c: np.ndarray, along_x: bool) -> int:
        line = c[0, : n // 2] if along_x else c[: n // 2, 0]
        return int(np.argmax(np.diff(np.sign(line)) != 0))

    # Round: the same ring radius along x and y. Astigmatic with the largest defocus along
    # x: the first zero comes in closer along x than along y.
    assert first_zero(round_, True) == first_zero(round_, False)
    assert first_zero(astig, True) < first_zero(round_, True) < first_zero(astig, False)


def test_defocus_gradient_images_each_height_at_its_own_defocus():
    from cryoscout.simulate.tomo_imaging import (
        height_sliced_operators,
        image_tilt_series,
        projection_operator,
    )

    angles = np.array([-60.0, 0.0, 45.0])
    full = projection_operator((12, 20), angles).to_dense()
    parts = height_sliced_operators((12, 20), angles, step_vox=3.0)
    assert len(parts) > 3
    assert np.allclose(sum(p.to_dense() for _, p in parts), full)
    # Two identical dots at 0° tilt, 0.11 µm apart in height, imaged at 5 Å: the same
    # image without a gradient, different Thon rings with one.
    density = np.zeros((256, 32, 64), np.float32)
    density[20, 16, 16] = density[235, 16, 48] = 1.0
    rng = np.random.default_rng(0)

    def dots(gradient: bool) -> tuple[np.ndarray, np.ndarray]:
        _, clean, _ = image_tilt_series(
            density,
            np.array([0.0]),
            40.0,
            rng,
            snr=None,
            defocus_um=2.0,
            phase_flip=False,
            defocus_gradient=gradient,
        )
        return clean[0, 6:27, 6:27], clean[0, 6:27, 38:59]

    a, b = dots(False)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()
    a, b = dots(True)
    assert np.abs(a - b).max() > 0.1 * np.abs(a).max()


def test_distractors_are_in_occupancy_and_distractors_but_not_in_particles():
    cfg = TomogramConfig(
        **TINY,
        n_particles=6,
        shapes=("sphere",),
        n_distractors=5,
        distractor_shapes=("ellipsoid",),
        voxel_size_A=20.0,
        n_fiducials=2,
        n_membranes=1,
        snr=None,
    )
    sim = simulate_tomogram(cfg, seed=5)
    d = sim.distractors
    assert set(d["kind"]) <= {"protein", "gold", "membrane"}
    assert (d["kind"] == "gold").sum() == 2
    assert (d["kind"] == "protein").sum() >= 1
    assert set(d[d.kind == "protein"].name) == {"ellipsoid"}
    assert len(sim.particles) == 6 and set(sim.particles["name"]) == {"sphere"}
    # Every distractor owns voxels labelled minus its row + 1; particles keep 1..n.
    ids = np.unique(sim.occupancy)
    assert set(ids[ids < 0]) == {-(i + 1) for i in range(len(d))}
    assert set(ids[ids > 0]) == set(range(1, 7))
    # A protein distractor's centre is its own.
    for i, row in d[d.kind == "protein"].iterrows():
        assert sim.occupancy[int(row.z), int(row.y), int(row.x)] == -(i + 1)
    # Without distractors the same seed gives the same particles (nothing else moves).
    plain = simulate_tomogram(
        TomogramConfig(
            **TINY,
            n_particles=6,
            shapes=("sphere",),
            n_fiducials=2,
            n_membranes=1,
            snr=None,
            voxel_size_A=20.0,
        ),
        seed=5,
    )
    assert plain.particles.equals(sim.particles)


def _bead_sharpness(tomo: np.ndarray, c) -> float:
    """Share of a bead's contrast in its central 3³ voxels out of a 9³ box."""
    z, y, x = (int(v) for v in c)
    box = np.abs(tomo[z - 4 : z + 5, y - 4 : y + 5, x - 4 : x + 5] - np.median(tomo))
    return float(box[3:6, 3:6, 3:6].sum() / box.sum())


def test_alignment_errors_blur_a_gold_bead():
    # At 40 Å per voxel the 5 nm bead is 1.5 voxels: a near point.
    base = dict(**TINY, n_particles=0, n_fiducials=1, snr=None, ctf=False, voxel_size_A=40.0)
    sharp = simulate_tomogram(TomogramConfig(**base), seed=2)
    blurred = simulate_tomogram(
        TomogramConfig(**base, alignment_shift_px=1.5, alignment_rotation_deg=1.0), seed=2
    )
    bead = sharp.distractors.iloc[0]
    assert bead.kind == "gold"
    c = (int(bead.z), int(bead.y), int(bead.x))
    # The bead is the darkest thing in the volume, with streaks (missing wedge) around it.
    assert sharp.tomogram[c[0], c[1], c[2]] < -5
    assert _bead_sharpness(blurred.tomogram, c) < 0.8 * _bead_sharpness(sharp.tomogram, c)


def test_material_outside_the_field_of_view_enters_at_the_edges():
    base = dict(**TINY, n_particles=6, shapes=("sphere",), n_fiducials=8, snr=None, ctf=False)
    inside = simulate_tomogram(TomogramConfig(**base), seed=1)
    wide = simulate_tomogram(TomogramConfig(**base, outside_material=True), seed=1)
    assert wide.tomogram.shape == inside.tomogram.shape
    assert wide.particles.equals(inside.particles)  # the truth is the field of view's
    diff = np.abs(wide.tomogram - inside.tomogram).mean(axis=(0, 1))  # per x column
    # At 60° the central columns see only the field of view; the edges see outside.
    assert diff[:6].mean() > 2 * diff[28:36].mean()
    assert diff[-6:].mean() > 2 * diff[28:36].mean()


def test_intensity_units_are_an_affine_map_of_the_default():
    cfg = dict(**TINY, n_particles=4, shapes=("sphere",))
    a = simulate_tomogram(TomogramConfig(**cfg), seed=7).tomogram
    b = simulate_tomogram(
        TomogramConfig(**cfg, intensity_scale=250.0, intensity_offset=-1000.0), seed=7
    ).tomogram
    np.testing.assert_allclose(b, 250.0 * a - 1000.0, rtol=1e-5, atol=1e-3)


def test_cli_switches_reach_the_simulator_and_distractors_csv(tmp_path, run_cli):
    import mrcfile
    import pandas as pd

    out = tmp_path / "sim"
    res = run_cli(
        "simulate",
        "tomogram",
        out,
        "--seed",
        "3",
        "--shape",
        "48,48,24",
        "--particles",
        "3",
        "--tilt-step",
        "10",
        "--distractors",
        "3",
        "--fiducials",
        "1",
        "--noise-slope",
        "-1",
        "--astigmatism-um",
        "0.5",
        "--defocus-gradient",
        "--outside-material",
        "--alignment-shift",
        "0.5",
        "--intensity-scale",
        "40",
        "--intensity-offset",
        "300",
    )
    assert res.code == 0, res.err
    dis = pd.read_csv(out / "distractors.csv")
    assert (dis["kind"] == "gold").sum() == 1 and (dis["kind"] == "protein").sum() >= 1
    with mrcfile.open(out / "tomogram.mrc") as m:
        assert float(np.median(m.data)) == pytest.approx(300, abs=40)
    with mrcfile.open(out / "occupancy.mrc") as m:
        assert int(m.data.min()) == -len(dis)
    import yaml

    rec = yaml.safe_load((out / "config.yaml").read_text())
    cfg = rec.get("config", rec)
    assert cfg["defocus_gradient"] is True and cfg["noise_slope"] == -1.0


def test_cli_complexes_are_distractors_and_need_their_subunits(tmp_path, run_cli, shared_data):
    import pandas as pd

    common = ["--shape", "48,48,24", "--voxel-size", "20", "--particles", "2", "--tilt-step", "10"]
    common += ["--templates", shared_data / "templates_10A", "--classes", "4cr2"]
    out = tmp_path / "sim"
    res = run_cli(
        "simulate", "tomogram", out, *common, "--distractors", "8",
        "--distractor-classes", "3qm1,1s3x", "--complexes", "2",
    )  # fmt: skip
    assert res.code == 0, res.err
    dis = pd.read_csv(out / "distractors.csv")
    names = set(dis.loc[dis["kind"] == "protein", "name"])
    # The subunits' own kinds and the two complexes are all drawn from.
    assert any(n.startswith("complex-") for n in names)
    assert names <= {"3qm1", "1s3x"} | {n for n in names if n.startswith("complex-")}
    assert len({n for n in names if n.startswith("complex-")}) <= 2

    res = run_cli("simulate", "tomogram", tmp_path / "bad", *common, "--complexes", "2")
    assert res.code == 1
    assert "--complexes" in res.err and "--distractor-classes" in res.err
    assert res.err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_cli_decoys_are_enlarged_classes_and_need_distractors(tmp_path, run_cli, shared_data):
    import pandas as pd

    common = ["--shape", "64,64,32", "--voxel-size", "20", "--particles", "2", "--tilt-step", "10"]
    common += ["--templates", shared_data / "templates_10A", "--classes", "4cr2"]
    out = tmp_path / "sim"
    res = run_cli("simulate", "tomogram", out, *common, "--distractors", "6", "--decoys")
    assert res.code == 0, res.err
    dis = pd.read_csv(out / "distractors.csv")
    prot = dis[dis["kind"] == "protein"]
    # Without --distractor-classes, every non-annotated protein is an enlarged 4cr2.
    assert len(prot) and set(prot["name"].str.rsplit("-x", n=1).str[0]) == {"4cr2"}
    scale = float(prot["name"].iloc[0].rsplit("-x", 1)[1])
    assert 1.3 <= scale <= 1.6
    truth = pd.read_csv(out / "particles.csv")
    assert (truth["name"] == "4cr2").all()

    for extra, missing in [([], "--distractors"), (["--distractors", "6"], "--templates")]:
        args = common[:-4] if missing == "--templates" else common
        res = run_cli("simulate", "tomogram", tmp_path / "bad", *args, *extra, "--decoys")
        assert res.code == 1
        assert "--decoys" in res.err and missing in res.err
        assert res.err.count("\n") == 1
        assert not (tmp_path / "bad").exists()
