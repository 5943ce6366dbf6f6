"""The beam's fall-off estimated from an atlas's own tiles, and removed before extraction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from cryoscout.atlas.extract import extract_squares
from cryoscout.atlas.flatfield import FLOOR, MIN_TILES, estimate_flat_field, flatten_tiles
from cryoscout.io.atlas_source import Montage
from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas
from cryoscout.simulate.imaging import vignetting

CONFIG = AtlasConfig(
    mesh=400, pixel_size_nm=800.0, tiles_x=5, tiles_y=5, tile_size=512, ice_mean_nm=70.0
)


@pytest.fixture(scope="module")
def sim():
    return simulate_atlas(CONFIG, seed=3)


def _relative_error(estimate: np.ndarray, strength: float) -> np.ndarray:
    truth = vignetting(estimate.shape, strength)
    ratio = estimate / truth
    return ratio / np.median(ratio) - 1


def test_estimate_recovers_the_beam_fall_off(sim):
    flat = estimate_flat_field(sim.tiles)
    assert flat is not None and flat.shape == sim.tiles[0].shape
    assert flat.max() == pytest.approx(1.0)
    err = _relative_error(flat, CONFIG.vignetting)
    # the fall-off is 35 % at the corners; what is left is a few per cent
    assert np.median(np.abs(err)) < 0.02
    assert np.percentile(np.abs(err), 98) < 0.05
    assert flat[0, 0] == pytest.approx(1 - CONFIG.vignetting, abs=0.05)


def test_an_even_beam_gives_a_flat_estimate():
    from dataclasses import replace

    even = simulate_atlas(replace(CONFIG, vignetting=0.0), seed=3)
    flat = estimate_flat_field(even.tiles)
    assert flat is not None
    # no fall-off to find: what the estimate shows is its own error, a few per cent
    assert np.median(flat) > 0.96
    assert np.percentile(flat, 1) > 0.9


def test_too_few_tiles_or_no_signal_give_none(sim):
    assert estimate_flat_field(sim.tiles[: MIN_TILES - 1]) is None
    assert estimate_flat_field([np.zeros((64, 64), np.float32)] * MIN_TILES) is None
    assert estimate_flat_field([]) is None
    tiles, flat = flatten_tiles(sim.tiles[:3])
    assert flat is None
    assert all(np.array_equal(a, b) for a, b in zip(tiles, sim.tiles[:3], strict=True))


def test_estimate_never_divides_by_less_than_the_floor():
    rng = np.random.default_rng(0)
    tiles = [rng.uniform(0.5, 1.0, (64, 64)).astype(np.float32) for _ in range(MIN_TILES)]
    for t in tiles:
        t[:, :8] = 1e-4  # a dark band in every tile: no signal there
    flat = estimate_flat_field(tiles)
    assert flat is not None and flat.min() >= FLOOR


def test_flat_fielded_squares_rank_by_their_ice(sim):
    """Without the correction a square's brightness depends on where in its tile it lies."""
    truth = sim.truth
    clean = (
        (truth["full"] == 1)
        & (truth["cracking"] == 0)
        & (truth["contamination"] == 0)
        & (truth["squareness"] == 4)
        & (truth["ice_thickness_nm"] > 0)
    ).to_numpy()
    rho = {}
    for name, image in (("raw", sim.image), ("flat", sim.montage.image)):
        ex = extract_squares(Montage(image, sim.pixel_size_A, sim.px_to_stage), size=32)
        dist, idx = cKDTree(ex.table[["x_px", "y_px"]].to_numpy()).query(
            truth[["x_px", "y_px"]].to_numpy()
        )
        keep = clean & (dist < 10)
        centre = ex.stack[:, 8:24, 8:24].mean(axis=(1, 2))[idx[keep]]
        rho[name] = spearmanr(centre, truth["transmission"].to_numpy()[keep]).statistic
        assert keep.sum() > 30
    assert rho["flat"] > 0.97
    assert rho["flat"] > rho["raw"] + 0.05


def test_stitch_applies_the_same_correction_to_written_tiles(sim, tmp_path):
    from cryoscout.atlas.stitch import stitch
    from cryoscout.io.atlas_reader import open_atlas
    from cryoscout.simulate.atlas import write_simulated_atlas

    source = open_atlas(write_simulated_atlas(sim, tmp_path, fmt="epu"))
    corrected = stitch(source).image
    raw = stitch(source, flat_field=False).image
    inside = np.isfinite(corrected) & (sim.montage.image > 0)
    np.testing.assert_allclose(corrected[inside], sim.montage.image[inside], rtol=0.02)
    # the correction only ever brightens: every tile is divided by at most 1
    assert np.all(corrected[inside] >= raw[inside] * 0.999)


def test_extract_flat_fields_unless_told_not_to(run_cli, sim, tmp_path):
    """`extract` on written tiles ranks squares by their ice; `--no-flat-field` does not."""
    import mrcfile
    import pandas as pd
    import yaml

    from cryoscout.simulate.atlas import write_simulated_atlas

    atlas = write_simulated_atlas(sim, tmp_path / "epu", fmt="epu")
    truth = sim.truth
    clean = (truth["full"] == 1) & (truth["cracking"] == 0) & (truth["contamination"] == 0)
    clean = (clean & (truth["squareness"] == 4) & (truth["ice_thickness_nm"] > 0)).to_numpy()
    rho = {}
    for flag in ("--flat-field", "--no-flat-field"):
        out = tmp_path / flag.strip("-")
        res = run_cli("extract", atlas, "-o", out, "--size", "32", flag)
        assert res.code == 0, res.err
        config = yaml.safe_load((out / "config.yaml").read_text())["config"]
        assert config["flat_field"] is (flag == "--flat-field")
        table = pd.read_csv(out / "squares.csv")
        with mrcfile.open(out / "squares.mrcs") as f:
            centre = f.data[:, 8:24, 8:24].mean(axis=(1, 2))
        dist, idx = cKDTree(table[["x_px", "y_px"]].to_numpy()).query(
            truth[["x_px", "y_px"]].to_numpy()
        )
        keep = clean & (dist < 10)
        rho[flag] = spearmanr(centre[idx[keep]], truth["transmission"][keep]).statistic
    assert rho["--flat-field"] > rho["--no-flat-field"] + 0.05


def test_percentile_over_tiles_is_numpys_nanpercentile():
    """One sort instead of NumPy's loop over pixels, with the same linear interpolation."""
    from cryoscout.atlas.flatfield import _percentile_over_tiles

    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 20, 15))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:3, 1, 1] = np.inf  # not finite: ignored like NaN
    x[:, 0, 0] = np.nan  # no value at all: NaN
    expected = np.full((20, 15), np.nan)
    finite = np.where(np.isfinite(x), x, np.nan)
    for i, j in np.ndindex(20, 15):
        column = finite[:, i, j][np.isfinite(finite[:, i, j])]
        if column.size:
            expected[i, j] = np.percentile(column, 95)
    np.testing.assert_allclose(_percentile_over_tiles(x, 95), expected, equal_nan=True)
