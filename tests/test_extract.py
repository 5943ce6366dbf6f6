"""Square extraction against known truth: recall, precision, centres, the full flag, crops."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.atlas.evaluate import match_to_truth
from cryoscout.atlas.extract import TABLE_COLUMNS, extract_squares
from cryoscout.atlas.matching import render_lattice
from cryoscout.errors import InputError
from cryoscout.io.atlas_source import Montage


@pytest.fixture(scope="module")
def sim():
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas

    cfg = AtlasConfig(
        mesh=300, pixel_size_nm=500.0, rotation_deg=37.0, tiles_x=3, tiles_y=3, tile_size=512
    )
    return simulate_atlas(cfg, seed=5)


@pytest.fixture(scope="module")
def extraction(sim):
    return extract_squares(sim.montage, size=64)


def test_finds_the_full_squares_of_a_simulated_atlas(sim, extraction):
    table, truth = extraction.table, sim.truth
    pitch = extraction.lattice.pitch_px
    m = match_to_truth(
        table[["x_px", "y_px"]].to_numpy(), truth[["x_px", "y_px"]].to_numpy(), 0.5 * pitch
    )
    true_full = np.flatnonzero(truth["full"].to_numpy() == 1)
    recall_full = np.isin(true_full, m.truth_index).mean()
    found_full = np.flatnonzero(table["full"].to_numpy() == 1)
    precision_full = np.isin(found_full, m.found_index).mean()
    assert len(true_full) > 20
    assert recall_full >= 0.95
    assert precision_full >= 0.95
    assert m.mean_error < 0.03 * pitch
    # The pitch the lattice fit reports is the simulated one (83 µm at 500 nm/px).
    assert pitch == pytest.approx(166.0, rel=0.01)


def test_table_stack_and_pixel_size(sim, extraction):
    table, stack = extraction.table, extraction.stack
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert stack.shape == (len(table), 64, 64) and stack.dtype == np.float32
    assert table["square_id"].tolist() == list(range(1, len(table) + 1))
    # One pitch resampled to 64 pixels.
    assert extraction.pixel_size_A == pytest.approx(
        sim.pixel_size_A * extraction.lattice.pitch_px / 64
    )
    assert table["brightness"].between(0, 4).all() and table["squareness"].between(0, 4).all()
    # Stage coordinates follow the montage's affine.
    sx, sy = sim.montage.to_stage(table["x_px"].to_numpy(), table["y_px"].to_numpy())
    np.testing.assert_allclose(table["stage_x_um"], sx)
    np.testing.assert_allclose(table["stage_y_um"], sy)


def test_crops_are_upright_squares_with_bars_at_the_border(extraction):
    full = extraction.stack[extraction.table["full"].to_numpy() == 1]
    mean = np.median(full, axis=0)
    centre = mean[24:40, 24:40].mean()
    # With fov = 1 pitch the crop edges run along the bar centre lines.
    for edge in (mean[:2, 16:48], mean[-2:, 16:48], mean[16:48, :2], mean[16:48, -2:]):
        assert edge.mean() < 0.2 * centre
    # The corners of the opening are film on an upright crop (not bar, as at 45 degrees).
    opening = extraction.opening_px
    inner = int(32 - 0.4 * opening)
    assert mean[inner, inner] > 0.5 * centre


def synthetic_atlas(shape, pitch, bar, angle, origin):
    """Film 100, bars 2, with Poisson noise; nodes at origin + lattice vectors."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    film = render_lattice(xx - origin[0], yy - origin[1], pitch, bar, angle)
    rng = np.random.default_rng(1)
    return rng.poisson(2 + 98 * film).astype(np.float32)


def nodes(shape, pitch, angle, origin):
    h, w = shape
    t = np.deg2rad(angle)
    ij = np.mgrid[-12:13, -12:13].reshape(2, -1).T.astype(float)
    x = origin[0] + pitch * (ij[:, 0] * np.cos(t) - ij[:, 1] * np.sin(t))
    y = origin[1] + pitch * (ij[:, 0] * np.sin(t) + ij[:, 1] * np.cos(t))
    keep = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return x[keep], y[keep]


@pytest.mark.parametrize("angle", [0.0, 45.0])
def test_full_flag_at_the_image_edge_and_next_to_unimaged_area(angle):
    shape, pitch, bar, origin = (700, 800), 100.0, 30.0, (370.0, 320.0)
    img = synthetic_atlas(shape, pitch, bar, angle, origin)
    img[:, :150] = np.nan  # a tile that was never acquired
    ext = extract_squares(Montage(img, None, None), size=32)
    x, y = nodes(shape, pitch, angle, origin)
    # Expected: full when the opening (side 70, at the angle) lies inside the imaged area.
    half = 0.5 * (pitch - bar)
    t = np.deg2rad(angle)
    reach = half * (abs(np.cos(t)) + abs(np.sin(t)))
    expect_full = (x - reach >= 150) & (x + reach <= shape[1] - 1)
    expect_full &= (y - reach >= 0) & (y + reach <= shape[0] - 1)
    imaged = x >= 150
    m = match_to_truth(
        ext.table[["x_px", "y_px"]].to_numpy(), np.stack([x[imaged], y[imaged]], 1), 0.5 * pitch
    )
    assert m.precision == 1.0 and m.recall >= 0.95
    found_full = ext.table["full"].to_numpy()[m.found_index]
    # Squares cut by a square's own width from the edge are ambiguous by a pixel; skip them.
    clear = np.abs(np.minimum.reduce([x - 150, shape[1] - 1 - x, y, shape[0] - 1 - y]) - reach) > 3
    sel = clear[imaged][m.truth_index]
    np.testing.assert_array_equal(found_full[sel], expect_full[imaged][m.truth_index][sel])
    assert (found_full == 0).any() and (found_full == 1).any()
    assert ext.pixel_size_A is None


def test_broken_square_on_a_lattice_node_is_kept():
    shape, pitch, bar, origin = (600, 600), 100.0, 30.0, (300.0, 300.0)
    img = synthetic_atlas(shape, pitch, bar, 20.0, origin)
    # Half the film of the centre square is gone: saturated, and a dark blob on another.
    yy, xx = np.mgrid[0:600, 0:600]
    centre = render_lattice(xx - 300.0, yy - 300.0, pitch, bar, 20.0) * (
        np.hypot(xx - 300, yy - 300) < 60
    )
    img[(centre > 0.5) & (xx < 300)] = 400.0
    ext = extract_squares(Montage(img, None, None), size=32)
    d = np.hypot(ext.table["x_px"] - 300, ext.table["y_px"] - 300)
    assert d.min() < 3.0


def test_bad_options_and_no_grid():
    img = np.random.default_rng(0).poisson(30, size=(300, 300)).astype(np.float32)
    with pytest.raises(InputError, match="--size"):
        extract_squares(Montage(img, None), size=4)
    with pytest.raises(InputError, match="--fov"):
        extract_squares(Montage(img, None), fov=0.0)
    with pytest.raises(InputError, match="no grid lattice found"):
        extract_squares(Montage(img, None))


def test_match_to_truth_is_one_to_one():
    found = np.array([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]])
    truth = np.array([[0.5, 0.0], [10.0, 0.0]])
    m = match_to_truth(found, truth, max_dist_px=3.0)
    assert len(m.found_index) == 1  # two found near one truth: only one pairs
    assert m.precision == pytest.approx(1 / 3) and m.recall == pytest.approx(0.5)
    assert m.mean_error == pytest.approx(0.5)
    assert m.truth_for_found().tolist().count(-1) == 2
    empty = match_to_truth(np.zeros((0, 2)), truth, 3.0)
    assert empty.recall == 0.0 and empty.precision == 1.0


# --- the copper rim of the grid -------------------------------------------------------


def rim_atlas(shape, pitch, bar, angle, origin, centre, radius, dark=()):
    """Film 100 inside a disc, bars and copper 2, Poisson noise; ``dark`` squares as copper."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    film = render_lattice(xx - origin[0], yy - origin[1], pitch, bar, angle)
    film *= np.clip(0.5 + radius - np.hypot(xx - centre[0], yy - centre[1]), 0.0, 1.0)
    for dx, dy in dark:  # thick ice as dark as copper: only the lattice says it is a square
        film[np.hypot(xx - dx, yy - dy) < 0.45 * (pitch - bar)] = 0.0
    rng = np.random.default_rng(2)
    return rng.poisson(2 + 98 * film).astype(np.float32)


def rim_lattice(pitch, bar, angle, origin):
    from cryoscout.atlas.lattice import Lattice

    return Lattice(pitch, angle, origin, bar_width_px=bar, bar_level=2.0, film_level=100.0)


@pytest.mark.parametrize(
    ("centre", "radius"),
    [((310.0, 290.0), 250.0), ((-150.0, 330.0), 560.0)],  # whole disc; an arc cut by the edges
)
def test_rim_circle_is_fitted_despite_dark_squares(centre, radius):
    from cryoscout.atlas.rim import find_rim

    pitch, bar, angle, origin = 60.0, 16.0, 30.0, (300.0, 300.0)
    t = np.deg2rad(angle)
    a, b = pitch * np.array([np.cos(t), np.sin(t)]), pitch * np.array([-np.sin(t), np.cos(t)])
    o = np.array(origin)
    # A black square in the middle of the grid and one next to the rim.
    dark = [tuple(o), tuple(o + 3 * a + b)]
    img = rim_atlas((600, 620), pitch, bar, angle, origin, centre, radius, dark)
    rim = find_rim(img, np.ones_like(img), rim_lattice(pitch, bar, angle, origin))
    assert rim is not None
    assert abs(rim.radius_px - radius) < 1.5
    assert np.hypot(rim.centre_xy[0] - centre[0], rim.centre_xy[1] - centre[1]) < 2.0


def test_no_rim_without_a_circular_copper_edge():
    from cryoscout.atlas.rim import find_rim

    pitch, bar, angle, origin = 60.0, 16.0, 30.0, (300.0, 300.0)
    lattice = rim_lattice(pitch, bar, angle, origin)
    plain = synthetic_atlas((600, 620), pitch, bar, angle, origin)
    assert find_rim(plain, np.ones_like(plain), lattice) is None
    # Black padding with a straight edge (a single image pasted on a canvas) is no rim.
    padded = plain.copy()
    padded[:, :200] = np.random.default_rng(3).poisson(2, (600, 200))
    assert find_rim(padded, np.ones_like(padded), lattice) is None


@pytest.fixture(scope="module")
def whole_grid():
    """A 200-mesh grid at 700 nm/px with the whole meshed disc and the rim in view."""
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas

    cfg = AtlasConfig(mesh=200, pixel_size_nm=700.0, rotation_deg=45.0, tiles_x=4, tiles_y=4)
    sim = simulate_atlas(cfg, seed=11)
    return sim, extract_squares(sim.montage, size=32)


def _flags(sim, ext):
    truth = sim.truth
    pitch = 125.0 * 1e4 / sim.pixel_size_A
    m = match_to_truth(
        ext.table[["x_px", "y_px"]].to_numpy(), truth[["x_px", "y_px"]].to_numpy(), 0.5 * pitch
    )
    found = ext.table["full"].to_numpy()[m.found_index]
    return m, found, truth.iloc[m.truth_index].reset_index(drop=True)


def test_squares_cut_by_the_rim_are_partial(whole_grid):
    sim, ext = whole_grid
    m, found, truth = _flags(sim, ext)
    assert m.recall >= 0.95
    assert np.mean(found == truth["full"].to_numpy()) >= 0.98
    # Squares that the image shows whole but the rim cuts: every one must be partial.
    cx, cy = sim.grid_centre_px
    r = sim.config.mesh_diameter_mm * 5e6 / sim.pixel_size_A
    far = np.hypot(truth["x_px"] - cx, truth["y_px"] - cy) > r - 0.5 * 125.0e4 / sim.pixel_size_A
    rim_cut = (truth["full"].to_numpy() == 0) & far.to_numpy()
    assert rim_cut.sum() > 20
    assert (found[rim_cut] == 0).all()


def test_dark_squares_inside_the_grid_stay_full(whole_grid):
    sim, _ = whole_grid
    truth = sim.truth
    cx, cy = sim.grid_centre_px
    d = np.hypot(truth["x_px"] - cx, truth["y_px"] - cy).to_numpy()
    full = truth["full"].to_numpy() == 1
    middle = int(np.argmin(d))
    near_rim = int(np.flatnonzero(full)[np.argmax(d[full])])  # the outermost full square
    assert full[middle] and full[near_rim]
    img = np.array(sim.image, dtype=np.float32)
    copper = float(np.nanpercentile(img, 5))
    side = (125.0 - 35.0) * 1e4 / sim.pixel_size_A
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    for k in (middle, near_rim):  # thick ice as dark as the copper itself
        x, y = truth.loc[k, "x_px"], truth.loc[k, "y_px"]
        img[np.hypot(xx - x, yy - y) < 0.48 * side] = copper
    ext2 = extract_squares(Montage(img, sim.pixel_size_A, None), size=32)
    m, found, matched = _flags(sim, ext2)
    for k in (middle, near_rim):
        hit = np.flatnonzero(m.truth_index == k)
        assert len(hit) == 1 and found[hit[0]] == 1
    assert np.mean(found == matched["full"].to_numpy()) >= 0.98
