"""The picker's input low-pass (`pick train --lowpass`): tiled = whole, recorded, re-applied."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cryoscout.io.mrc import read_mrc, write_mrc
from cryoscout.picking.data import NORMALIZATION, normalize, tomogram_stats
from cryoscout.picking.infer import predict_tomogram
from cryoscout.picking.lowpass import lowpass, lowpass_region
from cryoscout.picking.unet import ResUNet3d, tomogram_coords

SIGMA = 1.5


def _noise(shape=(20, 30, 26), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(3, 2, size=shape).astype(np.float32)


def test_a_region_filtered_alone_equals_the_whole_volume_filtered():
    vol = _noise()
    whole = gaussian_filter(vol, SIGMA)  # scipy's defaults: truncate 4, reflect
    regions = [
        (slice(0, 20), slice(0, 30), slice(0, 26)),
        (slice(0, 7), slice(5, 17), slice(20, 26)),  # at the edges
        (slice(8, 12), slice(11, 19), slice(9, 15)),  # inside
    ]
    for region in regions:
        np.testing.assert_allclose(lowpass_region(vol, region, SIGMA), whole[region], atol=1e-5)
    # Filtering the region's voxels alone (no margin) is not the same: the test can fail.
    inside = regions[2]
    assert np.abs(lowpass(vol[inside], SIGMA) - whole[inside]).max() > 1e-2


def test_normalisation_statistics_are_the_filtered_tomograms():
    vol = _noise((24, 40, 36), seed=3)
    filtered = gaussian_filter(vol, SIGMA)
    for max_samples in (1000, 10**7):  # strided subsample and every voxel
        got = tomogram_stats(vol, max_samples=max_samples, lowpass_sigma=SIGMA)
        want = tomogram_stats(filtered, max_samples=max_samples)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # White noise of std 2 low-passed by 1.5 voxels keeps well under half its std.
    assert got[1] < 0.5 * tomogram_stats(vol)[1]


def _net(coord_mode: str = "tomogram") -> ResUNet3d:
    torch.manual_seed(0)
    net = ResUNet3d(num_classes=2, channels=(4, 6), coord_mode=coord_mode)
    for m in net.modules():  # BatchNorm statistics that make eval mode not an identity
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_tiled_prediction_with_lowpass_equals_the_whole_filtered_volume():
    net = _net()
    vol = _noise((24, 56, 52), seed=1) * 37 + 500  # other units: normalisation must follow
    norm = dict(NORMALIZATION, lowpass_sigma=SIGMA)
    # 4 x 4 tiles in y and x; the margin covers the network's receptive field (13 voxels).
    tiled = predict_tomogram(
        net, vol, tile=48, margin=16, normalization=norm, with_probabilities=True, progress=False
    )
    filtered = gaussian_filter(vol, SIGMA)

    def whole(v: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalize(v, *tomogram_stats(v), NORMALIZATION["clip"]))[None, None]
        with torch.no_grad():
            p = net.predict_proba(x, tomogram_coords((0, 0, 0), v.shape, v.shape, x))[0]
        return p[1:].numpy()

    np.testing.assert_allclose(tiled.probabilities, whole(filtered), atol=1e-5)
    # The unfiltered tomogram gives another output: the filter really was applied.
    assert np.abs(tiled.probabilities - whole(vol)).max() > 1e-2


# --- pick train --lowpass, end to end on a tiny tomogram ---------------------------------

SHAPE = (16, 32, 32)


@pytest.fixture(scope="module")
def tomogram(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowpass")
    rng = np.random.default_rng(0)
    vol = rng.normal(size=SHAPE).astype(np.float32)
    vol[6:10, 14:18, 14:18] -= 2.0
    vol[6:10, 4:8, 22:26] -= 2.0
    write_mrc(root / "t.mrc", 40 * vol + 500, 10.0)
    pd.DataFrame({"class": [1, 1], "x": [16, 24], "y": [16, 6], "z": [8, 8]}).to_csv(
        root / "t.csv", index=False
    )
    return root


def _train_args(root, out, *extra):
    return (
        "pick", "train", root / "t.mrc", root / "t.csv", "-o", out, "--radius", "2",
        "--patch", "16", "--channels", "4,8", "--epochs", "1", "--batch-size", "2",
        "--samples-per-epoch", "2", "--accelerator", "cpu", "--seed", "3", *extra,
    )  # fmt: skip


def _predict(run, path):
    """``pick predict``'s segmentation step (its tile and margin) on one tomogram."""
    from cryoscout.picking import batch
    from cryoscout.picking.weights import load_model

    net, info = load_model(run)
    settings = batch.default_settings(net, info)
    vol, _ = read_mrc(path)
    kw = {"tile": settings.tile, "margin": settings.margin, "with_probabilities": True}
    return net, info, vol, kw


def test_lowpass_is_recorded_and_reapplied_at_prediction(tomogram, run_cli):
    import yaml

    run = tomogram / "lp"
    res = run_cli(*_train_args(tomogram, run, "--lowpass", "20"))
    assert res.code == 0, res.err
    net, info, vol, kw = _predict(run, tomogram / "t.mrc")
    assert info.normalization["lowpass_sigma"] == pytest.approx(2.0)  # 20 Å at 10 Å/voxel
    assert info.normalization["lowpass_A"] == 20.0
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["lowpass_A"] == 20.0
    # What prediction does with the recorded model = the network on the tomogram filtered
    # by hand and normalised by the filtered tomogram's statistics.
    got = predict_tomogram(net, vol, normalization=info.normalization, progress=False, **kw)
    filtered = gaussian_filter(vol.astype(np.float32), 2.0)
    by_hand = normalize(filtered, *tomogram_stats(filtered), NORMALIZATION["clip"])
    want = predict_tomogram(net, by_hand, normalization=None, progress=False, **kw)
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
    # `pick predict` (and the app's predict job: the same batch.pick_tomogram) applies it.
    # A one-epoch model calls everything background, which would make the scores map all
    # zeros: shift its foreground bias so that about half the voxels are particle.
    p1 = np.clip(want.probabilities[0], 1e-6, 1 - 1e-6)
    record = torch.load(run / "model.pt", weights_only=True)
    record["state_dict"]["head.bias"][1] -= float(np.median(np.log(p1 / (1 - p1))))
    (tomogram / "shifted").mkdir()
    torch.save(record, tomogram / "shifted" / "model.pt")
    res = run_cli(
        "pick", "predict", "-m", tomogram / "shifted", tomogram / "t.mrc",
        "-o", tomogram / "picks", "--save-probabilities", "--format", "csv",
    )  # fmt: skip
    assert res.code == 0, res.err
    shifted, _, _, _ = _predict(tomogram / "shifted", tomogram / "t.mrc")
    on_shifted = predict_tomogram(shifted, by_hand, normalization=None, progress=False, **kw)
    assert 0.1 < (on_shifted.scores > 0).mean() < 0.9
    scores, _ = read_mrc(tomogram / "picks" / "t_scores.mrc")
    np.testing.assert_allclose(scores, on_shifted.scores, atol=1e-5)
    unfiltered = predict_tomogram(net, vol, normalization=NORMALIZATION, progress=False, **kw)
    assert np.abs(unfiltered.probabilities - want.probabilities).max() > 1e-3


def test_a_model_trained_without_lowpass_predicts_as_before(tomogram, run_cli):
    import yaml

    run = tomogram / "plain"
    res = run_cli(*_train_args(tomogram, run))
    assert res.code == 0, res.err
    net, info, vol, kw = _predict(run, tomogram / "t.mrc")
    assert info.normalization == NORMALIZATION  # nothing recorded
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["lowpass_A"] == 0.0
    got = predict_tomogram(net, vol, normalization=info.normalization, progress=False, **kw)
    by_hand = normalize(vol, *tomogram_stats(vol), NORMALIZATION["clip"])
    want = predict_tomogram(net, by_hand, normalization=None, progress=False, **kw)
    np.testing.assert_array_equal(got.probabilities, want.probabilities)


@pytest.mark.parametrize(
    ("value", "voxel", "message"),
    [
        ("-5", 10.0, "--lowpass"),
        ("nan", 10.0, "--lowpass"),
        ("200", 10.0, "wider than a quarter"),  # 20 voxels in a 16-voxel patch
        ("20", 1.0, "no voxel size"),  # a header of 1 Å means none
    ],
)
def test_bad_lowpass_values_give_one_line_errors(
    tomogram, tmp_path, run_cli, value, voxel, message
):
    vol, _ = read_mrc(tomogram / "t.mrc")
    write_mrc(tmp_path / "t.mrc", vol, voxel)
    (tmp_path / "t.csv").write_text((tomogram / "t.csv").read_text())
    res = run_cli(*_train_args(tmp_path, tmp_path / "run", "--lowpass", value))
    # 2: a usage error the option parser catches itself (a number that is not finite).
    assert res.code in (1, 2) and res.err.count("\n") == 1 and message in res.err, res.err
    assert not (tmp_path / "run" / "model.pt").exists()
