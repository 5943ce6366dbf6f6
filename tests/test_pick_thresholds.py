"""Per-class MP-NMS thresholds chosen on validation tomograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.picking.evaluate import evaluate_picks
from cryoscout.picking.mpnms import mp_nms
from cryoscout.picking.thresholds import choose_thresholds

SHAPE = (32, 64, 64)


def _ball(centre, r=5):
    z, y, x = np.indices(SHAPE)
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= r * r


def _ragged(centre):
    """Half of a ball's voxels, the same half wherever it is: the same MP-NMS score."""
    keep = np.random.default_rng(0).random((11, 11, 11)) < 0.5
    out = np.zeros(SHAPE, bool)
    x, y, z = centre
    out[z - 5 : z + 6, y - 5 : y + 6, x - 5 : x + 6] = keep
    return out & _ball(centre)


def _validation():
    """Class 1: two solid true balls and a half-filled false blob; class 2: two solid balls."""
    labels = np.zeros(SHAPE, np.int64)
    truth = [(1, 12, 12, 16), (1, 40, 12, 16), (2, 12, 44, 16), (2, 40, 44, 16)]
    for c, x, y, z in truth:
        labels[_ball((x, y, z))] = c
    labels[_ragged((54, 30, 16))] = 1
    return labels, pd.DataFrame(truth, columns=["class", "x", "y", "z"])


def test_each_class_gets_the_threshold_of_its_best_f1():
    labels, truth = _validation()
    radius = {1: 5.0, 2: 5.0}
    chosen, f1 = choose_thresholds([(labels, truth)], radius, [1, 2])
    # Class 1 needs a threshold above the ragged blob's score to drop it: F1 1.0.
    # Class 2 has nothing to drop: the lowest threshold (ties go to the lowest).
    assert f1 == {1: 1.0, 2: 1.0}
    assert chosen[2] == 0.05 and chosen[1] > 0.05
    low = mp_nms(labels, radius, threshold=0.05, classes=[1], progress=False)
    assert evaluate_picks(low, truth[truth["class"] == 1], radius).per_class.loc[1, "f1"] < 1


def test_one_pass_equals_mp_nms_at_each_threshold():
    # choose_thresholds filters one low-threshold pass by score; that is MP-NMS itself.
    labels, _ = _validation()
    radius = {1: 5.0, 2: 5.0}
    low = mp_nms(labels, radius, threshold=0.05, progress=False)
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        direct = mp_nms(labels, radius, threshold=t, progress=False)
        pd.testing.assert_frame_equal(direct, low[low["score"] > t].reset_index(drop=True))


def test_a_class_the_validation_says_nothing_about_keeps_the_default():
    labels, truth = _validation()
    radius = {1: 5.0, 2: 5.0, 3: 5.0}
    # Class 2 has no true centre here, class 3 neither centres nor voxels: neither is chosen.
    chosen, f1 = choose_thresholds([(labels, truth[truth["class"] == 1])], radius, [1, 2, 3])
    assert set(chosen) == set(f1) == {1}


def test_several_tomograms_pool_their_counts():
    # Tomogram 1: two solid true balls and a ragged false blob. Tomogram 2: one solid and
    # one ragged *true* ball. The ragged blobs score the same, so a threshold keeps both
    # or drops both.
    labels1, _ = _validation()
    truth1 = pd.DataFrame([(1, 12, 12, 16), (1, 40, 12, 16)], columns=["class", "x", "y", "z"])
    labels2 = np.zeros(SHAPE, np.int64)
    labels2[_ball((12, 12, 16))] = 1
    labels2[_ragged((40, 40, 16))] = 1
    truth2 = pd.DataFrame([(1, 12, 12, 16), (1, 40, 40, 16)], columns=["class", "x", "y", "z"])
    radius = {1: 5.0}
    alone1, _ = choose_thresholds([(labels1, truth1)], radius, [1])
    alone2, _ = choose_thresholds([(labels2, truth2)], radius, [1])
    assert alone1[1] > 0.05 and alone2[1] == 0.05  # each alone would choose differently
    chosen, f1 = choose_thresholds([(labels1, truth1), (labels2, truth2)], radius, [1])
    # Pooled, keeping both ragged blobs: tp 4, fp 1, fn 0 -> F1 8/9; dropping both:
    # tp 3, fp 0, fn 1 -> F1 6/7. The low threshold wins.
    assert chosen == {1: 0.05}
    assert f1[1] == pytest.approx(8 / 9)
    with pytest.raises(ValueError, match="at least one"):
        choose_thresholds([], radius, [1])
