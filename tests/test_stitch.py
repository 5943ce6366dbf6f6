"""Stitching: known placement, blended overlaps, NaN gaps, fitted stage affine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.atlas.stitch import feather_weights, fit_px_to_stage, stitch
from cryoscout.errors import InputError
from cryoscout.io.atlas_reader import open_atlas
from cryoscout.io.epu import write_epu_atlas
from cryoscout.io.serialem import write_serialem_montage

# Rotated, anisotropic, y-flipped mapping: montage px -> stage µm.
A = np.array([[0.31, -0.05, -420.0], [-0.04, -0.29, 515.0]])
POS = [(x, y) for y in (0, 50) for x in (0, 60, 120)]  # 3 x 2 tiles of 64 x 80: overlaps


def _scene():
    yy, xx = np.mgrid[0:114, 0:200].astype(np.float32)
    truth = np.sin(xx / 7.0) + np.cos(yy / 5.0) + 0.01 * xx  # smooth, non-periodic
    tiles = [truth[y : y + 64, x : x + 80].copy() for x, y in POS]
    return truth, tiles


@pytest.mark.parametrize("fmt", ["epu", "serialem"])
def test_round_trip_recovers_image_and_affine(tmp_path, fmt):
    truth, tiles = _scene()
    if fmt == "epu":
        squares = pd.DataFrame({"square_id": [1], "x_px": [30.0], "y_px": [30.0], "size_px": [9.0]})
        path = write_epu_atlas(tmp_path, tiles, POS, 5000.0, A, squares).parent
    else:
        path = write_serialem_montage(tmp_path / "m.mrc", tiles, POS, 5000.0, A)
    montage = stitch(open_atlas(path))
    assert montage.image.shape == truth.shape
    assert montage.image.dtype == np.float32
    assert not np.isnan(montage.image).any()
    # Overlaps hold the same scene in both tiles: blending must give it back exactly.
    np.testing.assert_allclose(montage.image, truth, atol=1e-5)
    np.testing.assert_allclose(montage.px_to_stage, A, atol=1e-6)
    assert montage.pixel_size_A == pytest.approx(5000.0)
    sx, sy = montage.to_stage(np.array([10.0]), np.array([100.0]))
    assert (sx[0], sy[0]) == pytest.approx(tuple(A @ [10, 100, 1]), abs=1e-4)


def test_overlaps_are_blended_not_overwritten(tmp_path):
    """Two constant tiles (0 and 1) overlapping: the seam ramps smoothly between them."""
    tiles = [np.zeros((20, 40), np.float32), np.ones((20, 40), np.float32)]
    path = write_serialem_montage(tmp_path / "m.mrc", tiles, [(0, 0), (30, 0)], 100.0, A)
    row = stitch(open_atlas(path)).image[10]
    assert row[:30].max() == 0 and row[40:].min() == 1  # outside the overlap: one tile each
    seam = row[30:40]
    assert np.all(np.diff(seam) > 0)  # strictly rising across the overlap
    assert 0 < seam.min() < 0.5 < seam.max() < 1


def test_gaps_are_nan(tmp_path):
    tiles = [np.ones((10, 10), np.float32)] * 2
    path = write_serialem_montage(tmp_path / "m.mrc", tiles, [(0, 0), (15, 0)], 100.0, A)
    image = stitch(open_atlas(path)).image
    assert image.shape == (10, 25)
    assert np.isnan(image[:, 10:15]).all()
    assert (image[:, :10] == 1).all() and (image[:, 15:] == 1).all()


def test_missing_tile_names_the_tile_file(tmp_path):
    _, tiles = _scene()
    atlas = write_epu_atlas(tmp_path, tiles, POS, 5000.0, A, None)
    gone = sorted(tmp_path.glob("Tile_*_2_*.mrc"))[0]
    gone.unlink()
    with pytest.raises(InputError, match="missing") as err:
        stitch(open_atlas(atlas))
    assert err.value.path == str(gone)


def test_real_epu_atlas_without_tiles_cannot_stitch(shared_data):
    with pytest.raises(InputError, match="missing") as err:
        stitch(open_atlas(shared_data / "epu"))
    assert "Tile_4590157_0_4590151.mrc" in err.value.path


def test_feather_weights_fall_to_the_edges():
    w = feather_weights(5, 7)
    assert w.shape == (5, 7) and w.min() == 1 and w[2, 3] == 3
    assert (w[0] == 1).all() and (w[:, 0] == 1).all()


def test_fit_affine_cases():
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 1000, (10, 2))
    um = px @ A[:, :2].T + A[:, 2]
    np.testing.assert_allclose(fit_px_to_stage(px, um), A, atol=1e-9)
    # Tiles in one row: a similarity transform (rotation + scale) is still recovered.
    sim = np.array([[0.3, -0.1, 5.0], [0.1, 0.3, -7.0]])
    row = np.c_[np.arange(4) * 100.0, np.zeros(4)]
    np.testing.assert_allclose(fit_px_to_stage(row, row @ sim[:, :2].T + sim[:, 2]), sim, atol=1e-9)
    assert fit_px_to_stage(np.zeros((1, 2)), np.zeros((1, 2))) is None


def test_single_tile_uses_pixel_size(tmp_path):
    path = write_serialem_montage(
        tmp_path / "m.mrc", [np.zeros((11, 21), np.float32)], [(0, 0)], 5000.0, A
    )
    montage = stitch(open_atlas(path))
    a = montage.px_to_stage
    np.testing.assert_allclose(a[:, :2], [[0.5, 0], [0, 0.5]])  # 5000 Å = 0.5 µm per px
    centre = a @ [10, 5, 1]
    np.testing.assert_allclose(centre, A @ [10, 5, 1], atol=1e-5)
