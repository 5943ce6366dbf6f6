"""Overlap-tiled inference: tiles cover the volume once and leave no seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscout.picking.infer import axis_tiles, iter_tiles, predict_tomogram
from cryoscout.picking.unet import ResUNet3d, tomogram_coords


@pytest.mark.parametrize(
    ("n", "tile", "margin", "align"),
    [(100, 32, 8, 1), (64, 32, 8, 4), (70, 40, 8, 8), (20, 32, 8, 1)],
)
def test_cores_partition_the_axis_and_keep_the_margin(n, tile, margin, align):
    tiles = axis_tiles(n, tile, margin, align)
    covered = np.zeros(n, int)
    for start, stop, c0, c1 in tiles:
        covered[c0:c1] += 1
        assert 0 <= start <= c0 < c1 <= stop <= n
        assert start % align == 0
        assert c0 - start >= margin or start == 0
        assert stop - c1 >= margin or stop == n
        assert stop - start <= tile + align - 1
    assert (covered == 1).all()


def test_every_voxel_is_written_once():
    shape = (20, 45, 33)
    hits = np.zeros(shape, int)
    for _, core, _ in iter_tiles(shape, 16, 4, align=2):
        hits[core] += 1
    assert (hits == 1).all()


def test_tiled_prediction_equals_whole_volume_prediction():
    """No seams: a 2-level U-Net (receptive field radius 13 voxels) tiled with a 16-voxel margin.

    Tomogram coordinates make the network's output independent of the tiling, so every
    voxel must match the whole-volume pass to float32 round-off (tolerance 1e-5 in
    probability).
    """
    torch.manual_seed(0)
    net = ResUNet3d(num_classes=2, channels=(4, 6), coord_mode="tomogram")
    # Random BatchNorm statistics so that eval mode is not a near-identity.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(40, 56, 48)).astype(np.float32)
    tiled = predict_tomogram(net, vol, tile=40, margin=16, with_probabilities=True, progress=False)
    x = torch.from_numpy(vol)[None, None]
    with torch.no_grad():
        whole = net.predict_proba(x, tomogram_coords((0, 0, 0), vol.shape, vol.shape, x))[0]
    assert len(list(iter_tiles(vol.shape, 40, 16, net.stride))) > 8  # really tiled
    np.testing.assert_allclose(tiled.probabilities, whole[1:].numpy(), atol=1e-5)
    np.testing.assert_array_equal(tiled.labels, whole.argmax(0).numpy())
    # And with too small a margin the seams do show: the test can fail.
    seamy = predict_tomogram(net, vol, tile=40, margin=2, with_probabilities=True, progress=False)
    assert np.abs(seamy.probabilities - whole[1:].numpy()).max() > 1e-4


def test_normalisation_scores_and_memmap_output(tmp_path):
    net = ResUNet3d(num_classes=1, channels=(4, 6)).eval()
    vol = np.random.default_rng(1).normal(5, 3, size=(16, 24, 24)).astype(np.float32)
    np.save(tmp_path / "vol.npy", vol)
    mm = np.load(tmp_path / "vol.npy", mmap_mode="r")
    from cryoscout.picking.infer import TomogramPrediction

    out = TomogramPrediction(
        labels=np.lib.format.open_memmap(tmp_path / "lab.npy", "w+", np.uint8, vol.shape),
        scores=np.lib.format.open_memmap(tmp_path / "sc.npy", "w+", np.float32, vol.shape),
    )
    pred = predict_tomogram(
        net,
        mm,
        tile=16,
        margin=4,
        normalization={"method": "standardize", "clip": 5.0},
        out=out,
        progress=False,
    )
    assert pred.labels is out.labels
    fg = pred.labels > 0
    assert (pred.scores[~fg] == 0).all()
    assert ((pred.scores[fg] >= 0.5) & (pred.scores[fg] <= 1)).all()  # argmax of 2 classes
