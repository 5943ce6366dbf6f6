"""XCryoNet: output shapes, attention range, batch independence, losses, the three steps."""

from __future__ import annotations

import math

import pytest
import torch

from cryoscout.screening.model import XCryoNet
from cryoscout.screening.module import XCryoNetModule, masked_mse, supervised_loss

S = 32  # small inputs keep these tests fast


def _batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, S, S, generator=g)
    y = torch.randint(0, 5, (b, 5), generator=g).float()
    return x, y


def test_xcryonet_output_shapes_and_attention_range():
    torch.manual_seed(0)
    net = XCryoNet("xcryonet", size=S, width=4)
    x, _ = _batch()
    out = net(x, reconstruct="all")
    b = x.shape[0]
    assert out.scores.shape == (b, 5)
    assert out.primary_scores.shape == (b, 5)
    assert out.fusion_scores is not None and out.fusion_scores.shape == (b, 5)
    assert out.primary_recon.shape == (b, 1, S, S)
    assert out.primary_features.shape == (b, 8, S // 4, S // 4)
    for name in ("cracking", "contamination"):
        att = out.attention[name].detach()
        assert att.shape == (b, 1, S, S)
        assert float(att.min()) > 0.0 and float(att.max()) < 1.0
        torch.testing.assert_close(out.weighted[name], att * x)
        assert out.attribute_scores[name].shape == (b,)
        assert out.attribute_features[name].shape == (b, 8, S // 4, S // 4)
        assert out.attribute_recon[name].shape == (b, 1, S, S)
    # The final prediction of XCryoNet is the fusion branch's.
    torch.testing.assert_close(out.scores, out.fusion_scores)


def test_attention_uses_separate_channel_halves():
    net = XCryoNet("xcryonet", size=S, width=4)
    f = torch.zeros(1, 8, S // 4, S // 4)
    f[0, 0, 1, 1] = 10.0  # only a cracking channel fires
    maps = net.attention_maps(f)
    assert float(maps["cracking"].max()) > 0.99
    assert float(maps["contamination"].max()) == pytest.approx(0.5)


def test_primary_variant_has_no_attention_and_no_fusion():
    net = XCryoNet("primary", size=S, width=4)
    out = net(_batch()[0], reconstruct="none")
    assert out.scores.shape == (6, 5)
    assert out.attention == {} and out.fusion_scores is None and out.primary_recon is None
    groups = net.parameter_groups()
    assert groups["step2"] == [] and groups["step3"] == []


def test_bad_size_and_variant_are_refused():
    with pytest.raises(ValueError):
        XCryoNet("xcryonet", size=30)
    with pytest.raises(ValueError):
        XCryoNet("resnet", size=32)


@pytest.mark.parametrize("variant", ["primary", "xcryonet"])
def test_eval_scores_do_not_depend_on_batch_mates(variant):
    torch.manual_seed(1)
    net = XCryoNet(variant, size=S, width=4)
    # Give BatchNorm non-trivial running statistics, as after training.
    net.train()
    for _ in range(3):
        net(_batch(8, seed=3)[0] * 3 + 1)
    net.eval()
    x, _ = _batch(8, seed=4)
    with torch.no_grad():
        together = net(x, reconstruct="none").scores
        alone = torch.cat([net(x[i : i + 1], reconstruct="none").scores for i in range(8)])
        other_mates = net(torch.cat([x[:1], 5 * torch.randn(3, 1, S, S)]), "none").scores[0]
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(other_mates, together[0], rtol=1e-4, atol=1e-5)


def test_masked_mse_ignores_nan_labels():
    pred = torch.tensor([1.0, 2.0, 3.0])
    target = torch.tensor([1.0, float("nan"), 5.0])
    assert float(masked_mse(pred, target)) == pytest.approx(2.0)  # (0 + 4) / 2
    none = masked_mse(pred.requires_grad_(), torch.full((3,), float("nan")))
    assert float(none) == 0.0
    none.backward()  # still differentiable: an all-unlabeled batch does not crash training
    assert torch.all(pred.grad == 0)


def test_supervised_loss_is_attributes_plus_overall_and_masks_missing_scores():
    scores = torch.zeros(2, 5)
    labels = torch.tensor([[1.0, 1.0, float("nan"), float("nan"), 2.0], [1.0] * 4 + [float("nan")]])
    # attributes: six labeled entries of error 1 -> 1; overall: one entry of error 2 -> 4
    assert float(supervised_loss(scores, labels)) == pytest.approx(5.0)
    assert not math.isnan(float(supervised_loss(scores, torch.full((2, 5), float("nan")))))


def _changed_parameters(module: XCryoNetModule, run_step) -> set[str]:
    before = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    run_step()
    return {n for n, p in module.net.named_parameters() if not torch.equal(before[n], p.detach())}


def _expected(names: list[str], step: int) -> set[str]:
    def wanted(n: str) -> bool:
        if step == 1:
            return n.startswith("primary.") or (
                n.startswith("attribute_branches.") and ".decoder." not in n
            )
        if step == 2:
            return n.startswith("attribute_branches.") and ".classifier." not in n
        return n.startswith("fusion.")

    return {n for n in names if wanted(n)}


def test_each_training_step_updates_exactly_its_parameters():
    torch.manual_seed(2)
    module = XCryoNetModule("xcryonet", size=S, width=4, lr=1e-2)
    opt1, opt2, opt3 = module.configure_optimizers()
    names = [n for n, _ in module.net.named_parameters()]
    x, y = _batch(6)
    state = {}

    def step(opt, loss):
        module.net.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run1():
        loss, out, _ = module.step1_loss(x, y)
        state["out"] = out
        step(opt1, loss)

    def run2():
        loss, feats = module.step2_loss(state["out"])
        state["feats"] = feats
        step(opt2, loss)

    def run3():
        step(opt3, module.step3_loss(state["out"], state["feats"], y))

    changed1 = _changed_parameters(module, run1)
    assert changed1 == _expected(names, 1)
    assert not any(".decoder." in n and n.startswith("attribute") for n in changed1)
    assert _changed_parameters(module, run2) == _expected(names, 2)
    assert _changed_parameters(module, run3) == _expected(names, 3)
    # Every parameter belongs to at least one step.
    assert set().union(*(_expected(names, k) for k in (1, 2, 3))) == set(names)


def test_step1_ignores_unlabeled_squares_in_supervised_terms():
    torch.manual_seed(3)
    module = XCryoNetModule("xcryonet", size=S, width=4)
    x, y = _batch(4)
    y_unlabeled = y.clone()
    y_unlabeled[2:] = float("nan")
    _, _, logs_all = module.step1_loss(x[:2], y[:2])
    module.net.eval()  # same BatchNorm behaviour for both calls
    _, _, logs_a = module.step1_loss(x[:2], y[:2])
    _, _, logs_b = module.step1_loss(x, y_unlabeled)
    assert float(logs_a["loss_primary_sup"]) == pytest.approx(float(logs_b["loss_primary_sup"]))
    assert float(logs_a["loss_attr_sup"]) == pytest.approx(float(logs_b["loss_attr_sup"]))
    assert float(logs_all["loss_primary_rec"]) > 0
