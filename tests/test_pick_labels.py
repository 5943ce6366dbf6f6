"""TBall-M weak labels: size, shape, class, background and overlaps on hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.picking.labels import tball_labels, tball_offsets


def _one(cls: int, x: float, y: float, z: float) -> pd.DataFrame:
    return pd.DataFrame({"class": [cls], "x": [x], "y": [y], "z": [z]})


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_label_diameter_is_2r_plus_1_along_each_axis(r):
    lab = tball_labels((21, 21, 21), _one(2, 10, 10, 10), r)
    for axis in range(3):
        profile = np.moveaxis(lab, axis, 0)[:, 10, 10]
        assert np.count_nonzero(profile) == 2 * r + 1
    # Never wider than the cube of side 2r+1, in any direction.
    zz, yy, xx = np.nonzero(lab)
    for c in (zz, yy, xx):
        assert c.min() == 10 - r and c.max() == 10 + r


def test_ball_radius_sqrt2_r_truncated_to_cube():
    r = 3
    lab = tball_labels((15, 15, 15), _one(1, 7, 7, 7), r)
    c = 7
    assert lab[c, c + 3, c + 3] == 1  # xy-diagonal edge of the cube: distance sqrt(18) = sqrt(2) r
    assert lab[c + 3, c + 3, c] == 1
    assert lab[c + 3, c + 3, c + 1] == 0  # sqrt(19) > sqrt(2) r
    assert lab[c + 3, c + 3, c + 3] == 0  # cube corner, sqrt(27)
    assert lab[c + 4, c, c] == 0  # beyond the cube even though 4 < sqrt(2) r
    off = tball_offsets(r)
    d2 = (off**2).sum(axis=1)
    assert d2.max() == 18 and np.abs(off).max() == r
    assert np.count_nonzero(lab) == len(off)


def test_class_index_background_and_xyz_order():
    lab = tball_labels((10, 20, 30), _one(3, x=25, y=4, z=6), 1)
    assert lab.dtype == np.uint8
    assert lab[6, 4, 25] == 3  # indexed [z, y, x]
    assert set(np.unique(lab)) == {0, 3}
    assert lab[0, 0, 0] == 0


def test_overlapping_balls_nearer_centre_wins_and_per_class_radius():
    parts = pd.DataFrame({"class": [1, 2], "x": [10, 14], "y": [10, 10], "z": [10, 10]})
    lab = tball_labels((21, 21, 25), parts, {1: 3, 2: 3})
    row = lab[10, 10]
    assert list(row[7:12]) == [1, 1, 1, 1, 1]  # x=12 is a tie: the first listed keeps it
    assert list(row[13:18]) == [2, 2, 2, 2, 2]
    small = tball_labels((21, 21, 25), parts, {1: 1, 2: 4})
    assert np.count_nonzero(small == 1) == len(tball_offsets(1))


def test_balls_are_clipped_at_the_volume_edge_and_unknown_class_fails():
    lab = tball_labels((8, 8, 8), _one(1, 0, 0, 0), 2)
    assert lab[0, 0, 0] == 1 and lab[0, 0, 2] == 1
    with pytest.raises(KeyError):
        tball_labels((8, 8, 8), _one(5, 4, 4, 4), {1: 2})
