"""Scoring: load_model errors, predictions' shapes and ranges, the shipped default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscout.errors import InputError
from cryoscout.screening.model import SCORES, XCryoNet
from cryoscout.screening.predict import DEFAULT_MODEL, load_model, save_model

S = 32


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", XCryoNet("xcryonet", size=S, width=4), "atlas")
    return tmp_path


def test_predict_shapes_ranges_and_resizing(run_dir):
    model = load_model(run_dir)
    stack = np.random.default_rng(0).normal(size=(5, 48, 48)).astype(np.float32) * 50 + 100
    pred = model.predict(stack, batch_size=2)
    assert list(pred.scores.columns) == list(SCORES) and len(pred.scores) == 5
    assert pred.scores.to_numpy().min() >= 0 and pred.scores.to_numpy().max() <= 4
    assert set(pred.attention) == {"cracking", "contamination"}
    for att in pred.attention.values():
        assert att.shape == (5, 48, 48)  # the input's size, not the model's
        assert att.min() > 0 and att.max() < 1
    # Batch size is a speed knob only.
    again = model.predict(stack, batch_size=5)
    np.testing.assert_allclose(again.scores.to_numpy(), pred.scores.to_numpy(), atol=1e-5)
    # The input is not modified.
    assert stack.mean() > 50


def test_primary_model_has_no_attention(tmp_path):
    save_model(tmp_path / "p.pt", XCryoNet("primary", size=S, width=4), "square")
    pred = load_model(tmp_path / "p.pt").predict(np.ones((2, S, S), np.float32))
    assert pred.attention == {} and pred.scores.shape == (2, 5)


def test_load_model_errors_name_the_file_and_the_problem(tmp_path, run_dir):
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((run_dir / "model.pt").read_bytes()[:300])
    with pytest.raises(InputError, match="not a readable model file") as err:
        load_model(corrupt)
    assert err.value.path == str(corrupt)

    record = torch.load(run_dir / "model.pt", weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": record["state_dict"]}, other)  # not our format
    with pytest.raises(InputError, match="not a cryoscout screening model"):
        load_model(other)

    wrong_arch = dict(record, meta=dict(record["meta"], width=8))
    torch.save(wrong_arch, other)
    with pytest.raises(InputError, match="do not match the XCryoNet architecture"):
        load_model(other)

    newer = dict(record, format_version=99)
    torch.save(newer, other)
    with pytest.raises(InputError, match="format version 99"):
        load_model(other)


def test_load_model_error_is_one_line_through_the_cli(tmp_path, run_cli):
    (tmp_path / "model.pt").write_bytes(b"garbage")
    (tmp_path / "ext").mkdir()
    res = run_cli("explain", tmp_path / "ext", "-o", tmp_path / "out", "--model", tmp_path)
    assert res.code == 1 and res.err.count("\n") == 1


def test_default_model_ships_and_scores_the_real_square(shared_data):
    from cryoscout.io.mrc import read_mrc

    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size < 5_000_000
    model = load_model(None)
    assert model.variant == "xcryonet" and model.size == 128
    square, _ = read_mrc(shared_data / "squares" / "leginon_08mar13e_00010gr_00004sq.mrc")
    pred = model.predict(square.astype(np.float32))
    assert pred.scores.shape == (1, 5)
    assert pred.attention["cracking"].shape == (1, *square.shape)


def test_attention_overlay_colours_only_where_attention_is():
    from cryoscout.screening.explain import attention_overlay

    square = np.linspace(0, 1, S * S, dtype=np.float32).reshape(S, S)
    att = np.zeros((S, S), np.float32)
    att[:, S // 2 :] = 1.0
    rgb = attention_overlay(square, att)
    assert rgb.shape == (S, S, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, : S // 2].astype(int), rgb[:, S // 2 :].astype(int)
    assert np.all(left[..., 0] == left[..., 1])  # gray where attention is 0
    assert np.abs(right[..., 0] - right[..., 2]).mean() > 5  # coloured where it is 1


def test_explain_command_writes_overlays_for_chosen_squares(tmp_path, run_dir, run_cli):
    from cryoscout.io.mrc import write_mrc

    ext = tmp_path / "ext"
    ext.mkdir()
    stack = np.random.default_rng(1).normal(size=(4, 40, 40)).astype(np.float32)
    write_mrc(ext / "squares.mrcs", stack, 1000.0, stack=True)
    (ext / "squares.csv").write_text("square_id,x_px,y_px\n3,0,0\n5,1,1\n7,2,2\n9,3,3\n")
    res = run_cli("explain", ext, "-o", tmp_path / "out", "--model", run_dir, "--squares", "5,9")
    assert res.code == 0, res.err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "square_5.png",
        "square_9.png",
    ]
    from PIL import Image

    assert Image.open(tmp_path / "out" / "square_5.png").size[0] > 200
    res = run_cli("explain", ext, "-o", tmp_path / "o2", "--model", run_dir, "--squares", "4")
    assert res.code == 1 and "no square with id 4" in res.err
    res = run_cli("explain", ext, "-o", tmp_path / "o3", "--model", run_dir, "--top-k", "1")
    assert res.code == 0 and len(list((tmp_path / "o3").glob("*.png"))) == 1
