"""MP-NMS against a plain brute-force reference, and on blobs with known centres."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.picking.mpnms import merge_close, mp_nms


def _brute_force(mask: np.ndarray, k: int, n_pool: int, threshold: float):
    """Loop over voxels: box sums with zero padding, then the cube max; keep equal & > thr."""
    p = k // 2
    v = mask.astype(np.int64)
    nz, ny, nx = v.shape
    for _ in range(n_pool):
        s = np.zeros_like(v)
        for z in range(nz):
            for y in range(ny):
                for x in range(nx):
                    s[z, y, x] = v[
                        max(0, z - p) : z + p + 1,
                        max(0, y - p) : y + p + 1,
                        max(0, x - p) : x + p + 1,
                    ].sum()
        v = s
    out = set()
    norm = k ** (3 * n_pool)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                m = v[
                    max(0, z - p) : z + p + 1, max(0, y - p) : y + p + 1, max(0, x - p) : x + p + 1
                ].max()
                if v[z, y, x] == m and v[z, y, x] > threshold * norm:
                    out.add((x, y, z))
    return out


@pytest.mark.parametrize("seed,k,n_pool", [(0, 3, 1), (1, 3, 2), (2, 5, 1)])
def test_mp_nms_equals_brute_force(seed, k, n_pool):
    rng = np.random.default_rng(seed)
    # Random blobs plus salt noise: many plateaus and ties, the hard case for equality.
    mask = rng.random((9, 11, 10)) < 0.15
    mask[2:6, 3:7, 2:5] = True
    want = _brute_force(mask, k, n_pool, threshold=0.05)
    picks = mp_nms(
        mask.astype(np.int64),
        radius=k // 2,
        kernel=k,
        n_pool=n_pool,
        threshold=0.05,
        min_distance=0,
    )
    got = set(zip(picks.x.astype(int), picks.y.astype(int), picks.z.astype(int), strict=True))
    assert got == want
    assert len(want) > 0


def _ball(shape, centre, r):
    z, y, x = np.indices(shape)
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= r * r


def test_balls_give_their_centres_per_class():
    shape = (40, 48, 48)
    classes = np.zeros(shape, np.int64)
    truth = {1: [(10, 10, 10), (30, 12, 25)], 2: [(20, 35, 20), (38, 38, 30)]}
    for c, centres in truth.items():
        for ctr in centres:
            classes[_ball(shape, ctr, 5)] = c
    picks = mp_nms(classes, radius=5, threshold=0.1)
    for c, centres in truth.items():
        got = picks[picks["class"] == c][["x", "y", "z"]].to_numpy()
        assert len(got) == len(centres)
        for ctr in centres:
            assert np.min(np.linalg.norm(got - np.array(ctr), axis=1)) <= 1.0
    assert picks.score.between(0, 1).all()


def test_probability_input_matches_class_map():
    shape = (24, 24, 24)
    classes = np.zeros(shape, np.int64)
    classes[_ball(shape, (8, 8, 8), 4)] = 1
    classes[_ball(shape, (16, 16, 16), 4)] = 2
    prob = np.stack([classes == c for c in range(3)]).astype(np.float32) * 0.8 + 0.1
    a = mp_nms(classes, radius=4)
    b = mp_nms(prob, radius=4)
    c = mp_nms(prob, radius=4, prob_threshold=0.5)
    for other in (b, c):
        assert a[["class", "x", "y", "z"]].equals(other[["class", "x", "y", "z"]])


def test_merge_keeps_higher_score():
    pts = np.array([[0.0, 0, 0], [0, 0, 2], [0, 0, 10]])
    kept = merge_close(pts, np.array([0.5, 0.9, 0.1]), min_distance=3)
    assert kept.tolist() == [1, 2]


def test_empty_prediction_gives_empty_table():
    picks = mp_nms(np.zeros((8, 8, 8), np.int64), radius=2)
    assert list(picks.columns) == ["class", "x", "y", "z", "score"]
    assert len(picks) == 0


def test_runs_on_cuda_when_present():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    shape = (24, 24, 24)
    classes = np.zeros(shape, np.int64)
    classes[_ball(shape, (12, 12, 12), 4)] = 1
    gpu = mp_nms(torch.as_tensor(classes, device="cuda"), radius=4)
    cpu = mp_nms(classes, radius=4)
    assert gpu.equals(cpu)


def test_shell_fill_counts_the_shell_around_each_point():
    from cryoscout.picking.mpnms import shell_fill

    shape = (21, 21, 21)
    full, empty = np.ones(shape, bool), np.zeros(shape, bool)
    upper = np.zeros(shape, bool)
    upper[11:] = True  # z > 10: strictly above the point, half the shell less its equator
    p = np.array([[10, 10, 10]])
    assert shell_fill(full, p, 3, 5).tolist() == [1.0]
    assert shell_fill(empty, p, 3, 5).tolist() == [0.0]
    f = shell_fill(upper, p, 3, 5)[0]
    assert 0.4 < f < 0.5
    # Only the shell inside the volume counts: a region reaching the edge stays full there.
    assert shell_fill(full, np.array([[0, 0, 0]]), 3, 5).tolist() == [1.0]
    assert 0.4 < shell_fill(upper, np.array([[10, 0, 0]]), 3, 5)[0] < 0.5


def test_max_surround_drops_picks_inside_a_region_much_larger_than_a_particle():
    shape = (32, 64, 64)
    r = 5.0
    classes = np.zeros(shape, np.int64)
    centres = [(12, 12, 16), (22, 12, 16)]  # x, y, z; touching (2 r apart)
    for ctr in centres:
        classes[_ball(shape, ctr, 0.85 * r)] = 1
    classes[:, 30:, :] = 1  # a slab of the class, far larger than a particle
    plain = mp_nms(classes, radius=r, threshold=0.1, progress=False)
    assert len(plain) > 10  # MP-NMS fills the slab with full-score picks
    kept = mp_nms(classes, radius=r, threshold=0.1, progress=False, max_surround=0.5)
    got = kept[["x", "y", "z"]].to_numpy()
    assert len(got) == 2  # the touching pair survives, the slab's picks go
    for ctr in centres:
        assert np.min(np.linalg.norm(got - np.array(ctr), axis=1)) <= 1.0
    # Filtering only removes: every kept pick is one of the plain picks, same score.
    merged = kept.merge(plain, on=["class", "x", "y", "z", "score"])
    assert len(merged) == len(kept)


def test_threshold_per_class_applies_each_class_its_own():
    # Class 1 a solid ball, class 2 a ball with half its voxels missing: its pooled
    # maxima are about half as high, so a threshold between the two drops it alone.
    zz, yy, xx = np.mgrid[:32, :32, :48]
    classes = np.zeros((32, 32, 48), np.int64)
    classes[(zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 12) ** 2 <= 36] = 1
    sparse = (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 36) ** 2 <= 36
    classes[sparse & (np.random.default_rng(0).random(classes.shape) < 0.5)] = 2
    both = mp_nms(classes, radius=6, threshold=0.1, progress=False)
    top = both.groupby("class")["score"].max()
    assert top[2] < 0.7 < top[1]  # the premise: one threshold between them exists
    per_class = mp_nms(classes, radius=6, threshold={1: 0.1, 2: 0.7}, progress=False)
    assert set(per_class["class"]) == {1}
    pd.testing.assert_frame_equal(per_class, both[both["class"] == 1].reset_index(drop=True))
    with pytest.raises(ValueError, match="no threshold for class 2"):
        mp_nms(classes, radius=6, threshold={1: 0.1}, progress=False)
