"""The atlas simulator: determinism, geometry, Beer-Lambert physics, defects, truth and the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.simulate.atlas import SCORES, AtlasConfig, SimulatedAtlas, simulate_atlas
from cryoscout.simulate.grid import MESH_SPECS, hole_coverage
from cryoscout.simulate.imaging import COPPER_TRANSMISSION

SMALL = AtlasConfig(tiles_x=2, tiles_y=2, tile_size=512, pixel_size_nm=600.0)
CLEAN = dataclasses.replace(
    SMALL,
    broken_rate=0,
    crack_rate=0,
    contamination_rate=0,
    dry_rate=0,
    bent_bar_rate=0,
    specks=0,
)


@pytest.fixture(scope="module")
def default_small() -> SimulatedAtlas:
    return simulate_atlas(SMALL, seed=11)


def test_same_seed_same_atlas_other_seed_other_atlas(default_small):
    again = simulate_atlas(SMALL, seed=11)
    np.testing.assert_array_equal(again.image, default_small.image)
    pd.testing.assert_frame_equal(again.truth, default_small.truth)
    other = simulate_atlas(SMALL, seed=12)
    assert not np.array_equal(other.image, default_small.image)


def test_shapes_types_and_tiles(default_small):
    sim = default_small
    step = round(512 * 0.9)
    assert sim.image.shape == (step + 512, step + 512)
    assert sim.image.dtype == np.float32
    assert len(sim.tiles) == 4
    assert all(t.shape == (512, 512) and t.dtype == np.float32 for t in sim.tiles)
    assert sim.positions_px.tolist() == [[0, 0], [step, 0], [0, step], [step, step]]
    assert sim.pixel_size_A == pytest.approx(6000.0)
    # Tiles are independent exposures of the same grid: the overlaps agree only
    # within counting noise.
    a = sim.tiles[0][:, step:]
    b = sim.tiles[1][:, : 512 - step]
    assert not np.array_equal(a, b)
    assert abs(a.mean() - b.mean()) < 0.05 * a.mean()


@pytest.mark.parametrize(("mesh", "rotation"), [(300, 0.0), (200, 27.0), (400, 45.0)])
def test_lattice_pitch_and_angle_in_the_image(mesh, rotation):
    # uniform ice, so that square-to-square brightness does not smear the peak
    uniform = dict(ice_square_sigma=0.0, ice_blotting=0.0, ice_gradient=0.0)
    cfg = dataclasses.replace(
        CLEAN, mesh=mesh, rotation_deg=rotation, tiles_x=3, tiles_y=3, **uniform
    )
    sim = simulate_atlas(cfg, seed=3)
    img = sim.transmission - sim.transmission.mean()
    img = img * np.hanning(img.shape[0])[:, None] * np.hanning(img.shape[1])[None, :]
    # coarse peak from a padded FFT, then refined on a fine frequency grid by a direct DFT
    n = 4096
    power = np.abs(np.fft.rfft2(img, s=(n, n))) ** 2
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    expected = MESH_SPECS[mesh][0] / 0.6
    power[(f < 0.5 / expected) | (f > 1.5 / expected)] = 0  # keep the fundamental only
    iy, ix = np.unravel_index(np.argmax(power), power.shape)
    gx = fx[0, ix] + np.linspace(-1, 1, 81) / n
    gy = fy[iy, 0] + np.linspace(-1, 1, 81) / n
    ey = np.exp(-2j * np.pi * gy[:, None] * np.arange(img.shape[0])[None, :])
    ex = np.exp(-2j * np.pi * np.arange(img.shape[1])[:, None] * gx[None, :])
    fine = np.abs(ey @ img @ ex) ** 2
    ky, kx = np.unravel_index(np.argmax(fine), fine.shape)
    pitch_px = 1 / np.hypot(gx[kx], gy[ky])
    angle = np.rad2deg(np.arctan2(gy[ky], gx[kx])) % 90
    assert pitch_px == pytest.approx(expected, rel=0.005)
    diff = min(abs(angle - rotation), 90 - abs(angle - rotation))
    assert diff < 0.3


def test_number_of_squares_matches_grid_area_when_the_whole_grid_is_imaged():
    # A small meshed area (1 mm across) well inside a 1.36 mm image.
    cfg = dataclasses.replace(
        CLEAN, mesh=200, tile_size=1024, pixel_size_nm=700.0, mesh_diameter_mm=1.0
    )
    sim = simulate_atlas(cfg, seed=5)
    pitch = MESH_SPECS[200][0]
    expected = np.pi * 500.0**2 / pitch**2
    t = sim.truth
    # every square that shows is counted, so the visible fractions add up to the
    # open area of the disc over the area of one opening
    assert t["visible_fraction"].sum() == pytest.approx(expected, rel=0.06)
    x, y = sim.lattice.centre_um(t["i"].to_numpy(), t["j"].to_numpy())
    gx, gy = np.asarray(sim.grid_centre_px) * 0.7
    inside = np.hypot(x - gx, y - gy)
    assert (inside <= 500.0).sum() == pytest.approx(expected, abs=0.1 * expected)
    assert (t.loc[t["full"] == 1, "visible_fraction"] == 1).all()
    assert 0 < t["full"].sum() < len(t)


def test_beer_lambert_square_brightness_follows_ice_thickness():
    cfg = dataclasses.replace(
        CLEAN, vignetting=0.0, meniscus=0.0, dose=400.0, ice_square_sigma=0.6, tiles_x=3
    )
    sim = simulate_atlas(cfg, seed=7)
    full = sim.truth[sim.truth["full"] == 1]
    assert len(full) > 30
    half = int(0.15 * 58 / 0.6)
    means = np.array(
        [
            sim.image[round(y) - half : round(y) + half, round(x) - half : round(x) + half].mean()
            for x, y in zip(full["x_px"], full["y_px"], strict=True)
        ]
    )
    t = full["ice_thickness_nm"].to_numpy()
    assert t.max() - t.min() > 300  # a real range of thicknesses to fit
    slope, intercept = np.polyfit(t, np.log(means / cfg.dose), 1)
    assert -1 / slope == pytest.approx(cfg.mean_free_path_nm, rel=0.05)
    # the intercept is the film-and-hole factor of an empty square
    film = np.exp(-cfg.film_thickness_nm / cfg.mean_free_path_nm)
    fill = np.pi * 0.6**2 / 2.5**2
    assert np.exp(intercept) == pytest.approx(film + fill * (1 - film), rel=0.03)


def test_bars_are_dark_and_centres_bright_in_the_written_mrc(tmp_path, run_cli):
    from cryoscout.io.mrc import read_mrc

    code = _simulate_cli(run_cli, tmp_path / "sim", "--dry-rate", "0", "--bent-bar-rate", "0")
    assert code.code == 0, code.err
    image, pixel_size = read_mrc(tmp_path / "sim" / "atlas.mrc")
    assert pixel_size == pytest.approx(7000.0)
    truth = pd.read_csv(tmp_path / "sim" / "truth.csv")
    full = truth[
        (truth["full"] == 1)
        & (truth["broken_fraction"] == 0)
        & (truth["contamination_fraction"] == 0)
    ]
    assert len(full) > 10
    rot = np.deg2rad(30.0)
    half_pitch_px = 0.5 * 83.0 / 0.7
    dose = 120.0
    for r in full.itertuples():
        x, y = round(r.x_px), round(r.y_px)
        centre = image[y - 1 : y + 2, x - 1 : x + 2].mean()
        bx = round(r.x_px + half_pitch_px * np.cos(rot))
        by = round(r.y_px + half_pitch_px * np.sin(rot))
        bar = image[by - 1 : by + 2, bx - 1 : bx + 2].mean()
        assert bar < 5 * COPPER_TRANSMISSION * dose + 2  # copper: a count or two at most
        assert centre > 6  # film with ice, even thick: several counts or more


def _simulate_cli(run_cli, out, *extra):
    return run_cli(
        "simulate",
        "atlas",
        out,
        "--seed",
        "4",
        "--tiles",
        "2x2",
        "--tile-size",
        "512",
        "--pixel-size-nm",
        "700",
        "--rotation",
        "30",
        *extra,
    )


def test_broken_squares_are_bright_and_not_square():
    cfg = dataclasses.replace(SMALL, broken_rate=0.6, tiles_x=3)
    sim = simulate_atlas(cfg, seed=2)
    t = sim.truth
    broken = t[t["broken_fraction"] > 0.5]
    assert len(broken) > 5
    assert (broken["squareness"] <= 1).all()
    # whatever ice is left, a square that lost most of its film is bright
    assert (t.loc[t["broken_fraction"] > 0.8, "brightness"] >= 3).all()
    assert broken["brightness"].mean() > t["brightness"].mean() + 0.5
    intact = t[(t["broken_fraction"] == 0) & (t["bar_fraction"] == 0)]
    assert (intact["squareness"] == 4).all()
    # in the image, film-free pixels pass the whole beam
    assert sim.transmission[sim.defect_map == 1].mean() > 0.95


def test_contamination_is_dark_and_its_score_rises_with_its_area():
    cfg = dataclasses.replace(CLEAN, contamination_rate=0.8, tiles_x=3)
    sim = simulate_atlas(cfg, seed=9)
    t = sim.truth
    dirty = t[t["contamination_fraction"] > 0].sort_values("contamination_fraction")
    assert len(dirty) > 20
    assert dirty["contamination"].max() == 4 and dirty["contamination"].min() <= 1
    assert np.all(np.diff(dirty["contamination_value"].to_numpy()) >= 0)
    assert np.all(np.diff(dirty["contamination"].to_numpy()) >= 0)
    blobs = sim.transmission[sim.defect_map == 3]
    open_clean = sim.transmission[(sim.defect_map == 0) & (sim.transmission > 0.05)]
    assert blobs.mean() < 0.6 * open_clean.mean()
    # heavily contaminated squares are never rated well overall
    assert (t.loc[t["contamination"] >= 3, "overall"] <= 2).all()


def test_cracks_score_and_rubric():
    cfg = dataclasses.replace(CLEAN, crack_rate=0.7, tiles_x=3)
    sim = simulate_atlas(cfg, seed=4)
    t = sim.truth
    cracked = t[t["crack_fraction"] > 0]
    assert len(cracked) > 10
    assert cracked["cracking"].max() >= 3
    rho = np.corrcoef(cracked["crack_fraction"].rank(), cracked["cracking_value"].rank())[0, 1]
    assert rho > 0.99
    assert sim.transmission[sim.defect_map == 2].mean() > 0.7  # fissures are bright
    # the rubric: excellent squares have good ice, are intact and clean
    best = t[t["overall"] == 4]
    assert len(best) > 0
    assert best["ice_thickness_nm"].between(25, 160).all()
    assert (best["cracking"] == 0).all() and (best["squareness"] == 4).all()
    dry = simulate_atlas(dataclasses.replace(CLEAN, dry_rate=1.0), seed=1).truth
    assert (dry["ice_thickness_nm"] == 0).all() and (dry["overall"] == 0).all()
    assert (dry["brightness"] == 4).all()


def test_every_score_level_occurs_with_default_rates():
    sim = simulate_atlas(dataclasses.replace(SMALL, tiles_x=4, tiles_y=3), seed=21)
    t = sim.truth
    for name in ("brightness", "overall"):
        counts = np.bincount(t[name], minlength=5)
        assert (counts > 0).all(), (name, counts)
    assert 0.05 < (t["overall"] == 4).mean() < 0.5  # good squares: a minority, not rare


def test_label_noise_changes_labels_not_values(default_small):
    noisy = simulate_atlas(dataclasses.replace(SMALL, label_noise=1.0), seed=11).truth
    clean = default_small.truth
    for name in SCORES:
        np.testing.assert_allclose(noisy[f"{name}_value"], clean[f"{name}_value"])
        assert noisy[name].between(0, 4).all()
    changed = np.mean([(noisy[s] != clean[s]).mean() for s in SCORES])
    assert 0.2 < changed < 0.9


def test_truth_columns_and_stage_affine(default_small):
    t = default_small.truth
    assert list(t.columns[:11]) == [
        "square_id",
        "x_px",
        "y_px",
        "stage_x_um",
        "stage_y_um",
        "full",
        *SCORES,
    ]
    for col in ("ice_thickness_nm", "broken_fraction", "crack_fraction", "contamination_fraction"):
        assert col in t.columns
    assert t["square_id"].is_unique
    a = default_small.px_to_stage
    # 0.6 µm per pixel, y flipped, no rotation by default
    np.testing.assert_allclose(a[:, :2], [[0.6, 0], [0, -0.6]], atol=1e-12)
    sx = a[0, 0] * t["x_px"] + a[0, 1] * t["y_px"] + a[0, 2]
    np.testing.assert_allclose(sx, t["stage_x_um"])
    # stage positions of neighbouring squares are one pitch apart
    s = t[["stage_x_um", "stage_y_um"]].to_numpy()
    d = np.hypot(*(s[:, None, :] - s[None, :, :]).transpose(2, 0, 1))
    d[np.diag_indices_from(d)] = np.inf
    np.testing.assert_allclose(d.min(axis=1), 83.0, rtol=1e-6)


@pytest.mark.parametrize("diameter", [1.2, 2.0])
@pytest.mark.parametrize("px_um", [0.1, 0.3, 0.7])
def test_hole_texture_keeps_its_mean_at_any_pixel_size(diameter, px_um):
    pitch = 2.5 if diameter == 1.2 else 3.0
    x = (np.arange(600) * px_um)[None, :]
    y = (np.arange(300) * px_um)[:, None]
    cov = hole_coverage(x, y, diameter, pitch, 0.4, (0.3, 0.1), px_um)
    fill = np.pi * (diameter / 2) ** 2 / pitch**2
    assert cov.mean() == pytest.approx(fill, rel=0.03)
    assert cov.min() >= 0 and cov.max() <= 1
    if px_um <= 0.3:  # resolved holes: texture from fully open to fully covered
        assert cov.max() > 0.95 and cov.min() < 0.05


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="mesh"):
        simulate_atlas(AtlasConfig(mesh=250), seed=0)
    with pytest.raises(InputError, match="overlap"):
        simulate_atlas(AtlasConfig(overlap=0.7), seed=0)


def test_cli_writes_each_format(tmp_path, run_cli):
    res = _simulate_cli(run_cli, tmp_path / "mrc")
    assert res.code == 0, res.err
    assert sorted(p.name for p in (tmp_path / "mrc").iterdir()) == [
        "atlas.mrc",
        "simulation.yaml",
        "truth.csv",
    ]
    assert str(tmp_path / "mrc" / "atlas.mrc") in res.out
    import yaml

    record = yaml.safe_load((tmp_path / "mrc" / "simulation.yaml").read_text())
    assert record["config"]["seed"] == 4 and record["config"]["pixel_size_nm"] == 700.0
    res = _simulate_cli(run_cli, tmp_path / "epu", "--format", "epu")
    assert res.code == 0, res.err
    assert (tmp_path / "epu" / "Atlas.dm").is_file()
    assert len(list((tmp_path / "epu").glob("Tile_*.mrc"))) == 4
    res = _simulate_cli(run_cli, tmp_path / "sem", "--format", "serialem")
    assert res.code == 0, res.err
    assert (tmp_path / "sem" / "montage.mrc.mdoc").is_file()
    # no half-written leftovers beside the outputs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_refuses_bad_values_in_one_line(tmp_path, run_cli):
    res = _simulate_cli(run_cli, tmp_path / "x", "--format", "png")
    assert res.code == 1 and "--format" in res.err and "Traceback" not in res.err
    res = _simulate_cli(run_cli, tmp_path / "x", "--mesh", "250")
    assert res.code == 1 and "mesh" in res.err
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    res = _simulate_cli(run_cli, tmp_path / "full")
    assert res.code == 1 and "not empty" in res.err
    assert (tmp_path / "full" / "keep.txt").exists()
