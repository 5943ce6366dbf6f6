"""Tomogram normalisation and appearance randomisation for the picker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscout.picking.data import (
    NORMALIZATION,
    Appearance,
    Augmentation,
    augment,
    normalize,
    randomize_appearance,
    tomogram_stats,
)
from cryoscout.picking.infer import predict_tomogram
from cryoscout.picking.unet import ResUNet3d


def _volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = rng.normal(size=(24, 40, 40)).astype(np.float32)
    vol[5:9, 10:14, 10:14] = -40.0  # a gold bead: moves the mean and std, not the median/MAD
    return vol


@pytest.mark.parametrize(("a", "b"), [(37.0, 512.0), (0.01, -3.0), (1.0, 0.0)])
def test_robust_stats_follow_an_affine_change_of_units(a, b):
    vol = _volume()
    c0, s0 = tomogram_stats(vol)
    c1, s1 = tomogram_stats(a * vol + b)
    assert c1 == pytest.approx(a * c0 + b, rel=1e-5, abs=1e-4 * a)
    assert s1 == pytest.approx(a * s0, rel=1e-5)
    # The robust scale ignores the bead; the standard deviation does not.
    assert s0 == pytest.approx(1.0, abs=0.05)
    assert tomogram_stats(vol, "standardize")[1] > 1.5


def test_predictions_do_not_depend_on_intensity_units():
    """A positive gain and any offset leave the network's output unchanged."""
    torch.manual_seed(0)
    net = ResUNet3d(num_classes=2, channels=(4, 6), coord_mode="tomogram").eval()
    vol = _volume(1)
    ref = predict_tomogram(
        net,
        vol,
        tile=40,
        margin=4,
        normalization=NORMALIZATION,
        with_probabilities=True,
        progress=False,
    )
    for a, b in [(37.0, 512.0), (0.01, -3.0)]:
        other = predict_tomogram(
            net,
            a * vol + b,
            tile=40,
            margin=4,
            normalization=NORMALIZATION,
            with_probabilities=True,
            progress=False,
        )
        np.testing.assert_allclose(other.probabilities, ref.probabilities, atol=2e-4)
        assert (other.labels != ref.labels).mean() < 1e-3


def test_models_saved_before_version_2_keep_their_mean_std_normalisation(tmp_path):
    from cryoscout.picking.weights import PickingModelInfo, load_model, save_model

    torch.manual_seed(0)
    net = ResUNet3d(num_classes=1, channels=(4, 6), coord_mode="tomogram").eval()
    legacy = {"method": "standardize", "clip": 5.0}
    save_model(tmp_path / "model.pt", net, PickingModelInfo(["a"], {1: 3.0}, 24, legacy))
    model, info = load_model(tmp_path)
    assert info.normalization == legacy
    vol = _volume(2)
    got = predict_tomogram(
        model,
        vol,
        tile=40,
        margin=4,
        normalization=info.normalization,
        with_probabilities=True,
        progress=False,
    )
    mean, std = float(vol.mean()), float(vol.std())
    by_hand = predict_tomogram(
        model,
        normalize(vol, mean, std, 5.0),
        tile=40,
        margin=4,
        normalization=None,
        with_probabilities=True,
        progress=False,
    )
    np.testing.assert_allclose(got.probabilities, by_hand.probabilities, atol=1e-4)


def _ball_patch(m: int, centre, r: float = 4.0):
    g = np.indices((m, m, m)).astype(float)
    d = np.sqrt(sum((g[i] - centre[i]) ** 2 for i in range(3)))
    labels = (d <= r).astype(np.int64)
    rng = np.random.default_rng(3)
    image = np.where(labels > 0, -2.0, 0.0) + 0.3 * rng.normal(size=labels.shape)
    return image.astype(np.float32), labels


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def test_appearance_randomisation_moves_nothing_and_keeps_the_scale():
    image, labels = _ball_patch(32, (12, 19, 15))
    rng = np.random.default_rng(0)
    appearance = Appearance(probability=1.0, blur_sigma=(1.0, 2.0), noise_level=(0.5, 1.0))
    only_appearance = Augmentation(
        mirror=False,
        rot90=False,
        max_angle_deg=0.0,
        scale=(1.0, 1.0),
        gain=0,
        offset=0,
        noise=0,
        appearance=appearance,
    )
    for _ in range(5):
        out_img, out_lab = augment(image, labels, 32, only_appearance, rng)
        assert np.array_equal(out_lab, labels)
        assert not np.allclose(out_img, image)
        assert out_img.std() == pytest.approx(image.std(), rel=1e-3)
        assert out_img.mean() == pytest.approx(image.mean(), abs=1e-3)
        # The (blurred, noisier) dark ball is still where its label is: the image
        # matches the label best at zero shift.
        corr = np.fft.irfftn(
            np.fft.rfftn(-out_img) * np.conj(np.fft.rfftn(labels.astype(float))),
            s=labels.shape,
            axes=(0, 1, 2),
        )
        assert np.unravel_index(np.argmax(corr), corr.shape) == (0, 0, 0)


def test_full_augmentation_keeps_labels_on_the_particle():
    image, labels = _ball_patch(46, (18, 25, 21))
    rng = np.random.default_rng(1)
    for _ in range(8):
        img, lab = augment(image, labels, 32, Augmentation(), rng)
        assert lab.shape == (32, 32, 32) and lab.any()
        dark = img < np.percentile(img, 100 * lab.mean())
        assert np.linalg.norm(_centroid(dark) - _centroid(lab > 0)) < 1.5


def test_appearance_blur_blurs_the_particle_without_denoising_it():
    # A faint ball in strong noise, as in a tomogram: blurring signal and noise together
    # and restoring the std would make the ball several times more contrasted than any
    # microscope's tomogram of it; a microscope's blur leaves the noise as it was.
    m, r = 32, 4.0
    g = np.indices((m, m, m)).astype(float)
    ball = np.sqrt(sum((g[i] - 15.5) ** 2 for i in range(3))) <= r
    image = (np.where(ball, -0.3, 0.0) + np.random.default_rng(0).normal(size=ball.shape)).astype(
        np.float32
    )
    blur_only = Appearance(
        probability=1.0, gamma=(1.0, 1.0), blur_sigma=(1.5, 1.5), noise_level=(0.0, 0.0)
    )

    def contrast(x: np.ndarray) -> float:
        return float((x[~ball].mean() - x[ball].mean()) / x[~ball].std())

    before = contrast(image)
    for seed in range(4):
        out = randomize_appearance(image, blur_only, np.random.default_rng(seed))
        assert 0.5 * before < contrast(out) < 1.3 * before


@pytest.mark.parametrize("slope", [-2.0, 2.0])
def test_appearance_noise_has_the_drawn_colour(slope):
    flat = np.zeros((32, 32, 32), np.float32)
    flat[0, 0, 0] = 1.0  # a nonzero std to keep
    a = Appearance(
        probability=1.0,
        gamma=(1.0, 1.0),
        blur_sigma=(0.0, 0.0),
        noise_level=(5.0, 5.0),
        noise_slope=(slope, slope),
    )
    out = randomize_appearance(flat, a, np.random.default_rng(0))
    p = np.abs(np.fft.rfftn(out - out.mean())) ** 2
    k = np.sqrt(
        np.fft.fftfreq(32)[:, None, None] ** 2
        + np.fft.fftfreq(32)[None, :, None] ** 2
        + np.fft.rfftfreq(32)[None, None, :] ** 2
    )
    low, high = p[(k > 0.05) & (k < 0.15)].mean(), p[(k > 0.35) & (k < 0.5)].mean()
    assert (high > 3 * low) if slope > 0 else (low > 3 * high)


def test_pick_train_switch_turns_appearance_randomisation_on(tmp_path, run_cli):
    import pandas as pd
    import yaml

    from cryoscout.io.mrc import write_mrc

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(16, 32, 32)).astype(np.float32)
    vol[6:10, 14:18, 14:18] -= 2.0
    write_mrc(tmp_path / "t.mrc", 40 * vol + 500, 10.0)
    pd.DataFrame({"class": [1], "x": [16], "y": [16], "z": [8]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    common = ["pick", "train", tmp_path / "t.mrc", tmp_path / "t.csv", "--radius", "2"]
    common += ["--patch", "16", "--channels", "4,8", "--epochs", "1", "--batch-size", "2"]
    common += ["--samples-per-epoch", "2", "--accelerator", "cpu"]
    for flag, on in (("--randomize-appearance", True), ("--no-randomize-appearance", False)):
        res = run_cli(*common, "-o", tmp_path / flag, flag)
        assert res.code == 0, res.err
        rec = yaml.safe_load((tmp_path / flag / "config.yaml").read_text())["config"]
        appearance = rec["augmentation"]["appearance"]
        assert (appearance["probability"] == 0.8) if on else appearance is None
