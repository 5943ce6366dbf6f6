"""The 3D residual U-Net: shapes, coordinate channels, pyramid inputs, Dice loss, weights."""

from __future__ import annotations

import pytest
import torch

from cryoscout.errors import InputError
from cryoscout.picking.module import picking_loss, soft_dice_loss
from cryoscout.picking.unet import ResUNet3d, patch_coords, tomogram_coords
from cryoscout.picking.weights import PickingModelInfo, load_model, save_model

TINY = (4, 6, 8, 10)


@pytest.mark.parametrize("size", [(16, 16, 16), (24, 32, 40), (17, 21, 30), (8, 8, 8)])
def test_output_shape_and_softmax(size):
    torch.manual_seed(0)
    net = ResUNet3d(num_classes=3, channels=TINY).eval()
    x = torch.randn(2, 1, *size)
    out = net(x)
    assert out.shape == (2, 4, *size)  # classes + background
    prob = net.predict_proba(x)
    assert torch.allclose(prob.sum(dim=1), torch.ones(2, *size), atol=1e-5)
    assert (prob >= 0).all()


def test_default_channels_are_the_papers():
    net = ResUNet3d(num_classes=1)
    assert net.channels == (24, 48, 72, 108)
    assert net.head.out_channels == 2
    assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_coordinate_channels_span_minus_one_to_one():
    like = torch.zeros(1)
    c = patch_coords((5, 7, 9), like)
    assert c.shape == (1, 3, 5, 7, 9)
    assert c.min() == -1 and c.max() == 1
    assert torch.allclose(c[0, 2, 0, 0], torch.linspace(-1, 1, 9))  # channel 2 = x along x
    assert torch.allclose(c[0, 0, :, 0, 0], torch.linspace(-1, 1, 5))  # channel 0 = z along z
    full = tomogram_coords((0, 0, 0), (5, 7, 9), (5, 7, 9), like)
    assert torch.allclose(full, c, atol=1e-6)
    part = tomogram_coords((1, 2, 3), (2, 2, 2), (5, 7, 9), like)
    assert torch.allclose(part, c[:, :, 1:3, 2:4, 3:5], atol=1e-6)


def test_pyramid_and_coordinates_reach_every_block():
    net = ResUNet3d(num_classes=2, channels=TINY)
    # Level 1: image + 3 coords; levels 2-4: previous level + pooled image + 3 coords.
    first = [blk.conv1.in_channels for blk in net.encoders]
    assert first == [1 + 3, 4 + 1 + 3, 6 + 1 + 3, 8 + 1 + 3]
    assert [blk.conv1.in_channels for blk in net.decoders] == [4 + 3, 6 + 3, 8 + 3]
    # A 1x1x1 projection on the skip exactly where the channels change.
    for b in [*net.encoders, *net.decoders]:
        same = b.conv1.in_channels == b.conv3.out_channels
        assert isinstance(b.skip, torch.nn.Identity) == same
        if not same:
            assert b.skip[0].kernel_size == (1, 1, 1)


def test_pyramid_input_changes_deep_levels():
    """The pooled image reaches level 4: zeroing its weights there changes the output."""
    torch.manual_seed(1)
    net = ResUNet3d(num_classes=1, channels=TINY).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    before = net(x)
    with torch.no_grad():
        net.encoders[3].conv1.weight[:, 8] = 0  # the avgpool8(x) input channel
        net.encoders[3].skip[0].weight[:, 8] = 0
    assert not torch.allclose(before, net(x))


def test_coordinates_change_the_output():
    torch.manual_seed(2)
    net = ResUNet3d(num_classes=1, channels=(4, 6)).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    a = net(x)
    b = net(x, coords=torch.zeros(1, 3, 8, 8, 8))
    assert not torch.allclose(a, b)


def test_dice_loss_perfect_wrong_and_gradient():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5, 2:5] = 1
    target[0, 5:7, 5:7, 5:7] = 2
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 4, 1, 2, 3).float() * 50
    assert soft_dice_loss(perfect, target) < 1e-3
    wrong = torch.roll(perfect, 1, dims=1)
    assert soft_dice_loss(wrong, target) > 0.9
    logits = torch.zeros(1, 3, 8, 8, 8, requires_grad=True)
    loss = soft_dice_loss(logits, target)
    loss.backward()
    assert 0 < loss < 1 and logits.grad.abs().sum() > 0


def test_dice_plus_cross_entropy_adds_a_voxel_term():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5, 2:5] = 1
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 4, 1, 2, 3).float() * 50
    assert picking_loss(perfect, target, "dice+ce") < 1e-3
    logits = torch.zeros(1, 2, 8, 8, 8)
    dice = picking_loss(logits, target, "dice")
    both = picking_loss(logits, target, "dice+ce")
    # Uniform logits over 2 classes: cross-entropy ln 2 on every voxel.
    assert torch.isclose(both - dice, torch.log(torch.tensor(2.0)), atol=1e-5)
    with pytest.raises(ValueError, match="loss"):
        picking_loss(logits, target, "focal")


def test_weights_round_trip(tmp_path):
    torch.manual_seed(3)
    net = ResUNet3d(num_classes=2, channels=(4, 6), coord_mode="tomogram").eval()
    info = PickingModelInfo(["ribosome", "proteasome"], {1: 4.0, 2: 3.0}, 32)
    path = save_model(tmp_path / "model.pt", net, info)
    loaded, meta = load_model(tmp_path)
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.equal(net(x), loaded(x))
    assert loaded.coord_mode == "tomogram" and loaded.channels == (4, 6)
    assert meta.class_names == ["ribosome", "proteasome"]
    assert meta.radius == {1: 4.0, 2: 3.0} and meta.patch_size == 32
    assert path.name == "model.pt"


def test_wrong_architecture_or_corrupt_file_is_an_input_error(tmp_path):
    net = ResUNet3d(num_classes=1, channels=(4, 6))
    info = PickingModelInfo(["a"], {1: 2.0}, 16)
    save_model(tmp_path / "model.pt", net, info)
    record = torch.load(tmp_path / "model.pt", weights_only=True)
    record["architecture"] = "xcryonet"
    torch.save(record, tmp_path / "other.pt")
    with pytest.raises(InputError, match="another architecture"):
        load_model(tmp_path / "other.pt")
    record["architecture"] = "deepetpicker-resunet3d"
    record["model_config"]["channels"] = [4, 8]
    torch.save(record, tmp_path / "mismatch.pt")
    with pytest.raises(InputError, match="do not fit"):
        load_model(tmp_path / "mismatch.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a readable"):
        load_model(tmp_path / "junk.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not a cryoscout"):
        load_model(tmp_path / "plain.pt")
