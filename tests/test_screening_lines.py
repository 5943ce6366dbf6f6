"""Crack features: long thin bright lines stand out from noise, holes and bar edges."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.screening.lines import N_LINE_FEATURES, line_features

S = 128
#: Columns of line_features: the segment map's strongest value and mean of its 8 strongest.
SEGMENT_MAX, SEGMENT_TOP8 = 4, 5


def square(rng, holes: bool = True, crack: float | None = None, bright: float = 1.5) -> np.ndarray:
    """A normalised grid square: dark bars, a film with a lattice of holes, shot noise.

    ``crack``: direction in degrees of a 60-pixel crack through the centre,
    ``bright`` above the film.
    """
    from skimage.draw import line_aa

    x = np.full((S, S), -2.0)  # bars
    x[12:-12, 12:-12] = 0.0  # film
    if holes:  # the holey film's holes: brighter dots every 6 pixels
        yy, xx = np.mgrid[:S, :S]
        dots = np.cos(2 * np.pi * yy / 6) * np.cos(2 * np.pi * xx / 6) > 0.5
        x[12:-12, 12:-12] += 0.6 * dots[12:-12, 12:-12]
    if crack is not None:
        a, c, h = np.deg2rad(crack), S // 2, 30
        rr, cc, val = line_aa(
            int(c - h * np.sin(a)), int(c - h * np.cos(a)),
            int(c + h * np.sin(a)), int(c + h * np.cos(a)),
        )  # fmt: skip
        x[rr, cc] += bright * val
    return (x + rng.normal(0, 0.4, x.shape)).astype(np.float32)


def test_a_crack_in_any_direction_stands_out_from_holes_and_noise():
    rng = np.random.default_rng(0)
    clean = line_features(np.stack([square(rng) for _ in range(4)]))
    cracked = line_features(np.stack([square(rng, crack=a) for a in (0, 20, 45, 70, 90, 135)]))
    assert clean.shape == (4, N_LINE_FEATURES) and clean.dtype == np.float32
    for col in (SEGMENT_MAX, SEGMENT_TOP8):
        assert cracked[:, col].min() > 1.3 * clean[:, col].max()
    # The bar edges are bright on one side only: with the film eroded they add nothing.
    assert np.all(clean[:, 7] == 0)


def test_a_faint_crack_scores_between_none_and_a_bright_one():
    rng = np.random.default_rng(1)
    stack = np.stack([square(rng), square(rng, crack=30, bright=0.8), square(rng, crack=30)])
    top8 = line_features(stack)[:, SEGMENT_TOP8]
    assert top8[0] < top8[1] < top8[2]


def test_features_ignore_the_atlas_contrast_and_offset():
    rng = np.random.default_rng(2)
    stack = np.stack([square(rng), square(rng, crack=10)])
    np.testing.assert_allclose(line_features(3 * stack - 1), line_features(stack), atol=1e-4)


@pytest.mark.parametrize("n", [0, 1])
def test_small_stacks(n):
    rng = np.random.default_rng(3)
    stack = np.stack([square(rng) for _ in range(n)]) if n else np.zeros((0, S, S), np.float32)
    assert line_features(stack).shape == (n, N_LINE_FEATURES)
