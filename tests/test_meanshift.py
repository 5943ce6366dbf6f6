"""MeanShift baseline: DeepFinder's clustering (all classes together, majority vote)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.picking.meanshift import meanshift_picks


def _ball(shape, centre_zyx, r):
    zz, yy, xx = np.indices(shape)
    c = centre_zyx
    return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r**2


def test_separate_balls_give_one_pick_each_at_the_centre():
    shape = (24, 40, 40)
    labels = np.zeros(shape, np.int64)
    centres = {1: (8, 10, 10), 2: (12, 28, 12), 3: (14, 20, 30)}
    for c, ctr in centres.items():
        labels[_ball(shape, ctr, 4)] = c
    picks = meanshift_picks(labels, radius={1: 5.0, 2: 5.0, 3: 5.0})
    assert sorted(picks["class"]) == [1, 2, 3]
    for _, p in picks.iterrows():
        z, y, x = centres[int(p["class"])]
        assert np.hypot(np.hypot(p.x - x, p.y - y), p.z - z) < 0.5
        assert p.score == _ball(shape, (z, y, x), 4).sum()


def test_class_by_majority_vote_where_per_class_splits_the_particle():
    shape = (20, 20, 20)
    labels = np.zeros(shape, np.int64)
    ball = _ball(shape, (10, 10, 10), 4)
    labels[ball] = 1
    cap = ball & (np.indices(shape)[2] >= 13)  # a cap of the ball mislabelled class 2
    labels[cap] = 2
    assert 0 < cap.sum() < ball.sum() / 2
    picks = meanshift_picks(labels, radius=5.0)
    assert len(picks) == 1 and picks["class"].iloc[0] == 1
    assert picks["score"].iloc[0] == ball.sum()
    # The per-class variant clusters the cap on its own: a second, wrong-class pick.
    split = meanshift_picks(labels, radius=5.0, method="per-class")
    assert sorted(split["class"]) == [1, 2]


def test_a_tied_vote_goes_to_the_lower_class():
    shape = (12, 12, 12)
    labels = np.zeros(shape, np.int64)
    labels[4:8, 4:8, 4:6] = 3
    labels[4:8, 4:8, 6:8] = 2
    picks = meanshift_picks(labels, radius=4.0)
    assert list(picks["class"]) == [2]


def test_min_size_drops_speckle_and_classes_restricts_the_voxels():
    shape = (20, 30, 30)
    labels = np.zeros(shape, np.int64)
    labels[_ball(shape, (10, 10, 10), 4)] = 1
    labels[3, 26, 3] = 1  # one stray voxel far away
    labels[_ball(shape, (10, 20, 22), 3)] = 2
    assert len(meanshift_picks(labels, radius=4.0, classes=[1])) == 2
    kept = meanshift_picks(labels, radius=4.0, classes=[1], min_size=5)
    assert len(kept) == 1 and kept["class"].iloc[0] == 1
    # A class asked for but absent from the map (a network that never predicts it).
    absent = meanshift_picks(labels, radius=4.0, classes=[1, 2, 5], min_size=5)
    assert sorted(absent["class"]) == [1, 2]


def test_deepfinder_method_is_sklearn_meanshift_with_bin_seeding_and_mean_bandwidth():
    from sklearn.cluster import MeanShift

    rng = np.random.default_rng(0)
    labels = (rng.random((12, 16, 16)) < 0.1) * rng.integers(1, 3, (12, 16, 16))
    radius = {1: 3.0, 2: 5.0}
    picks = meanshift_picks(labels, radius)
    ref = MeanShift(bandwidth=4.0, bin_seeding=True).fit(np.argwhere(labels > 0).astype(float))
    got = np.sort(picks[["z", "y", "x"]].to_numpy(), axis=0)
    np.testing.assert_allclose(got, np.sort(ref.cluster_centers_, axis=0))
    assert picks["score"].sum() == (labels > 0).sum()


def test_probabilities_are_binarised_by_argmax_and_bad_method_raises():
    shape = (16, 16, 16)
    prob = np.zeros((3, *shape), np.float32)
    prob[0] = 0.6
    prob[2][_ball(shape, (8, 8, 8), 3)] = 0.9
    picks = meanshift_picks(prob, radius=4.0)
    assert list(picks["class"]) == [2]
    assert meanshift_picks(np.zeros(shape, np.int64), radius=4.0).empty
    with pytest.raises(ValueError, match="method"):
        meanshift_picks(prob, radius=4.0, method="fast")
