"""Automatic labels move the right way: brighter squares, broken or covered squares."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.atlas.labels import (
    automatic_labels,
    brightness_raw,
    opening_mask,
    squareness_raw,
    to_score,
)

SIZE = 96
OPENING = 0.7 * SIZE  # side of the opening in crop pixels (bar = 0.3 pitch, fov = 1)


def square_crop(level=0.5, seed=0, size=SIZE, opening=OPENING):
    """An upright rounded square of film at ``level`` on near-zero bars, with noise."""
    from cryoscout.atlas.matching import render_lattice

    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    c = (size - 1) / 2
    film = render_lattice(xx - c, yy - c, float(size), size - opening, 0.0)
    rng = np.random.default_rng(seed)
    return (film * level + rng.normal(0, 0.02, (size, size)) + 0.01).astype(np.float32)


def test_brighter_square_has_higher_brightness():
    crops = np.stack([square_crop(level) for level in (0.3, 0.5, 0.7)])
    raw = brightness_raw(crops, OPENING)
    assert raw[0] < raw[1] < raw[2]
    assert raw[1] == pytest.approx(0.51, abs=0.02)  # the film level (+ offset), bars excluded
    scores = automatic_labels(crops, OPENING)["brightness"]
    assert scores[0] < scores[1] < scores[2]


def test_brightness_ignores_unimaged_pixels():
    crop = square_crop(0.6)
    half = crop.copy()
    half[:, : SIZE // 2] = 0.0  # half the square was never imaged (partial square)
    raw = brightness_raw(np.stack([crop, half]), OPENING)
    assert raw[1] == pytest.approx(raw[0], abs=0.02)
    assert np.isnan(brightness_raw(np.zeros((1, SIZE, SIZE), np.float32), OPENING)[0])


def test_half_broken_square_is_less_square():
    intact = square_crop(0.5)
    broken = intact.copy()
    mask = opening_mask(SIZE, OPENING, margin=0.0)
    # The film of the left half is gone: the beam passes unattenuated (saturated).
    broken[mask & (np.arange(SIZE)[None, :] < SIZE // 2)] = 1.0
    s_intact, s_broken = squareness_raw(intact), squareness_raw(broken)
    assert s_intact > 0.85
    assert s_broken < s_intact - 0.3


def test_square_half_covered_by_a_bent_bar_is_less_square():
    intact = square_crop(0.5, seed=1)
    covered = intact.copy()
    covered[: SIZE // 2 + 5, :] = 0.01  # a bar bent over the top half
    assert squareness_raw(covered) < squareness_raw(intact) - 0.3


def test_squareness_is_rotation_tolerant_and_bounded():
    from scipy import ndimage

    crop = square_crop(0.5, size=128, opening=84)
    turned = ndimage.rotate(crop, 30, reshape=False, order=1, cval=0.01)
    s0, s30 = squareness_raw(crop), squareness_raw(turned)
    assert 0.0 <= s30 <= 1.0
    assert s30 == pytest.approx(s0, abs=0.1)  # min-area enclosing square of any rotation
    assert squareness_raw(np.full((64, 64), 0.3, np.float32)) == 0.0  # no edges, no region


def test_scores_are_clipped_to_the_scale():
    out = to_score(np.array([-10.0, 0.5, 10.0, np.nan]), (0.0, 4.0))
    assert out[0] == 0.0 and out[1] == pytest.approx(2.0) and out[2] == 4.0
    assert np.isnan(out[3])
