"""Lattice pitch and angle from the image alone, on hand-made grids and simulated atlases."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.atlas.lattice import block_mean, estimate_lattice
from cryoscout.errors import InputError

MESH_PITCH_UM = {200: 125.0, 300: 83.0, 400: 62.0}


def synthetic_grid(
    shape=(900, 1000),
    pitch=110.0,
    bar_fraction=0.3,
    angle=30.0,
    seed=0,
    holes_px=0.0,
    vignette=0.0,
    nan_corner=0.0,
    offset=(0.0, 0.0),
):
    """Rounded bright squares on dark bars with Poisson noise; a node at the centre + offset."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    t = np.deg2rad(angle)
    dx, dy = xx - w / 2 - offset[0], yy - h / 2 - offset[1]
    u = (dx * np.cos(t) + dy * np.sin(t)) / pitch
    v = (-dx * np.sin(t) + dy * np.cos(t)) / pitch
    fu, fv = np.abs(u - np.round(u)) * pitch, np.abs(v - np.round(v)) * pitch
    half = 0.5 * pitch * (1 - bar_fraction)
    r = 0.15 * pitch
    qx, qy = fu - (half - r), fv - (half - r)
    sd = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
    film = np.clip(0.5 - sd, 0, 1)
    # Squares of different ice thickness, a few saturated (broken) ones.
    level = 0.35 + 0.5 * rng.random((64, 64))
    level[rng.random((64, 64)) < 0.05] = 1.6
    img = film * level[(np.round(u).astype(int) % 64), (np.round(v).astype(int) % 64)]
    if holes_px:
        holes = np.cos(2 * np.pi * xx / holes_px) * np.cos(2 * np.pi * yy / holes_px) > 0.3
        img = img * (1 + 0.3 * holes)
    if vignette:
        rr = np.hypot(xx - w / 2, yy - h / 2) / max(h, w)
        img = img * (1 - vignette * rr**2 * 2)
    img = rng.poisson(np.clip(img, 0, None) * 150 + 2).astype(np.float32)
    if nan_corner:
        img[: int(h * nan_corner), : int(w * nan_corner)] = np.nan
    return img


def angle_error(a: float, b: float) -> float:
    """Difference of two lattice angles modulo 90 degrees."""
    return abs((a - b + 45.0) % 90.0 - 45.0)


@pytest.mark.parametrize("angle", [0.0, 12.0, 45.0, 71.0, 89.5])
@pytest.mark.parametrize("pitch", [48.0, 140.0])
def test_pitch_and_angle_of_synthetic_grids(angle, pitch):
    img = synthetic_grid(pitch=pitch, angle=angle, seed=int(angle))
    lat = estimate_lattice(img)
    assert lat.pitch_px == pytest.approx(pitch, rel=0.02)
    assert angle_error(lat.angle_deg, angle) < 1.0
    assert 0.0 <= lat.angle_deg < 90.0


def test_robust_to_holes_vignetting_and_unimaged_corner():
    # Fine hole texture, strong fall-off and a large NaN area must not change the answer.
    img = synthetic_grid(pitch=160.0, angle=33.0, holes_px=7.0, vignette=0.6, nan_corner=0.45)
    lat = estimate_lattice(img)
    assert lat.pitch_px == pytest.approx(160.0, rel=0.02)
    assert angle_error(lat.angle_deg, 33.0) < 1.0


def test_origin_lands_on_a_square_centre():
    img = synthetic_grid(pitch=100.0, angle=20.0, offset=(13.0, -29.0))
    lat = estimate_lattice(img)
    i, j = lat.to_indices(np.array(500.0 + 13.0), np.array(450.0 - 29.0))
    # The known node has integer lattice indices relative to the reported origin.
    assert abs(i - np.round(i)) < 0.03 and abs(j - np.round(j)) < 0.03
    assert lat.bar_width_px == pytest.approx(30.0, rel=0.35)
    assert lat.film_level > 5 * max(lat.bar_level, 1.0)


def test_a_wrong_pixel_size_does_not_stop_it():
    # 1 µm/px would make a 140 px pitch implausible (140 µm is fine, 14 is not): the
    # pixel size is a hint, never a requirement.
    img = synthetic_grid(pitch=140.0, angle=5.0)
    assert estimate_lattice(img, pixel_size_A=1000.0).pitch_px == pytest.approx(140.0, rel=0.02)


@pytest.mark.parametrize(
    ("mesh", "pixel_nm", "rotation"), [(200, 600.0, 10.0), (400, 300.0, 45.0), (300, 500.0, 78.0)]
)
def test_pitch_and_angle_of_simulated_atlases(mesh, pixel_nm, rotation):
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas

    cfg = AtlasConfig(
        mesh=mesh,
        pixel_size_nm=pixel_nm,
        rotation_deg=rotation,
        tiles_x=2,
        tiles_y=2,
        tile_size=512,
    )
    sim = simulate_atlas(cfg, seed=3)
    lat = estimate_lattice(sim.image)  # no pixel size: from the image alone
    true_pitch = MESH_PITCH_UM[mesh] * 1e3 / pixel_nm
    assert lat.pitch_px == pytest.approx(true_pitch, rel=0.02)
    assert angle_error(lat.angle_deg, rotation) < 1.0


def test_no_grid_is_an_input_error():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    blobs = ndimage.gaussian_filter(rng.normal(size=(600, 600)), 12).astype(np.float32)
    with pytest.raises(InputError, match="no grid lattice found"):
        estimate_lattice(blobs)
    with pytest.raises(InputError, match="no grid lattice found"):
        estimate_lattice(np.full((300, 300), 5.0, np.float32))
    with pytest.raises(InputError, match="no grid lattice found"):
        estimate_lattice(rng.poisson(50, size=(400, 500)).astype(np.float32))


def test_natural_image_is_not_a_grid():
    from skimage import data

    with pytest.raises(InputError, match="no grid lattice found"):
        estimate_lattice(data.camera().astype(np.float32))


def test_block_mean_ignores_nan():
    img = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 5.0]], np.float32)
    small, cov = block_mean(img, 2)
    assert small.shape == (1, 2)
    assert small[0, 0] == pytest.approx(1.0) and small[0, 1] == pytest.approx(4.0)
    assert cov[0, 0] == pytest.approx(0.25) and cov[0, 1] == pytest.approx(0.5)
