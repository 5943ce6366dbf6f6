"""The gradient-boosted-trees baseline learns labels that its features determine."""

from __future__ import annotations

import warnings

import numpy as np

from cryoscout.screening.baseline import BaselineModel, square_features, stack_features
from cryoscout.screening.metrics import mean_abs_diff
from cryoscout.screening.model import SCORES

S = 32


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright openings on dark bars; brightness = level, contamination = number of dark blobs."""
    rng = np.random.default_rng(seed)
    stack = np.zeros((n, S, S), np.float32)
    labels = np.full((n, 5), np.nan, np.float32)
    for i in range(n):
        level = rng.uniform(0.5, 2.0)
        img = rng.normal(0, 0.05, (S, S)).astype(np.float32) - 1.0
        img[4:-4, 4:-4] += level + 1.0
        blobs = int(rng.integers(0, 5))
        for _ in range(blobs):
            r, c = rng.integers(8, S - 8, 2)
            img[r - 2 : r + 2, c - 2 : c + 2] = -1.0
        stack[i] = img
        labels[i, 0] = (level - 0.5) / 1.5 * 4
        labels[i, 3] = blobs
    return stack, labels


def test_features_have_a_fixed_length_and_are_finite():
    a = square_features(np.random.default_rng(0).normal(size=(S, S)))
    b = square_features(np.zeros((2 * S, 2 * S)))
    assert a.shape == b.shape and a.ndim == 1
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))


def test_baseline_beats_predicting_the_mean():
    train_x, train_y = _toy(150, seed=1)
    test_x, test_y = _toy(60, seed=2)
    model = BaselineModel(seed=0).fit(stack_features(train_x), train_y)
    pred = model.predict(stack_features(test_x))
    assert pred.shape == (60, 5)
    # Scores never labeled are not predicted.
    assert np.all(np.isnan(pred[:, [1, 2, 4]]))
    assert np.nanmin(pred) >= 0 and np.nanmax(pred) <= 4
    mad = mean_abs_diff(pred, test_y)
    with warnings.catch_warnings():  # columns never labeled have no mean: fine here
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_guess = np.broadcast_to(np.nanmean(train_y, axis=0), test_y.shape)
    mad_mean = mean_abs_diff(mean_guess, test_y)
    for name in ("brightness", "contamination"):
        assert mad[name] < 0.5 * mad_mean[name], (name, mad[name], mad_mean[name])
    assert set(mad) == set(SCORES)


def test_fast_features_are_the_first_features_of_each_square_computed_at_once():
    from cryoscout.screening.baseline import N_FAST, fast_features

    stack = np.random.default_rng(5).normal(0, 2, size=(6, S, S)).astype(np.float32)
    stack[0, 0, :3] = [
        -4.0,
        4.0,
        9.0,
    ]  # histogram ends: -4 in the first bin, 4 and above in the last
    fast = fast_features(stack)
    assert fast.shape == (6, N_FAST)
    for square, row in zip(stack, fast, strict=True):
        np.testing.assert_allclose(row, square_features(square)[:N_FAST], atol=1e-6)
        hist, _ = np.histogram(np.clip(square, -4, 4), bins=16, range=(-4, 4))
        np.testing.assert_allclose(row[:16], hist / square.size)
