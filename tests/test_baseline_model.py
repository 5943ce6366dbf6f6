"""The gradient-boosted-trees baseline as a shipped, selectable scoring model (``-m baseline``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cryoscout.errors import InputError
from cryoscout.models import SHIPPED, model_file
from cryoscout.screening.baseline import (
    BASELINE_KIND,
    BaselineModel,
    n_square_features,
    save_baseline,
    stack_features,
)
from cryoscout.screening.model import SCORES
from cryoscout.screening.predict import load_model

S = 24


@pytest.fixture(scope="module")
def fitted():
    """A baseline fitted on random features (fast), and the file it is saved as."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, n_square_features())).astype(np.float32)
    y = np.clip(np.stack([x[:, j] + 2 for j in range(len(SCORES))], axis=1), 0, 4)
    return BaselineModel(seed=0).fit(x, y.astype(np.float32))


def test_saved_baseline_loads_weights_only_and_predicts_what_sklearn_predicts(fitted, tmp_path):
    path = save_baseline(tmp_path / "b.pt", fitted, size=S, normalisation="atlas", note="x")
    record = torch.load(path, map_location="cpu", weights_only=True)
    assert record["format"] == "cryoscout-baseline-gbt" and record["meta"]["note"] == "x"
    model = load_model(path)
    assert model.kind == BASELINE_KIND and model.size == S and not model.has_attention
    rows = np.random.default_rng(1).normal(size=(20, n_square_features())) * 2
    for s in SCORES:
        np.testing.assert_allclose(
            model.trees[s].predict(rows), fitted.models[s].predict(rows), atol=1e-9
        )
    # predict: the stack normalised together and resized, as the benchmark's features were made
    stack = np.random.default_rng(2).normal(100, 20, size=(5, 40, 40)).astype(np.float32)
    pred = model.predict(stack, features=True)
    from cryoscout.screening.data import normalise, resize_stack

    feats = stack_features(resize_stack(normalise(stack, "atlas"), S))
    np.testing.assert_allclose(pred.scores[list(SCORES)].to_numpy(), fitted.predict(feats))
    assert pred.attention == {} and pred.features.shape == (5, n_square_features())
    assert stack.mean() > 50  # the input is not modified


def test_shipped_baseline_gives_the_numbers_of_the_sklearn_models_it_came_from():
    path = SHIPPED["baseline"]
    record = torch.load(path, map_location="cpu", weights_only=True)  # no pickled objects
    meta = record["meta"]
    assert meta["kind"] == BASELINE_KIND and meta["n_features"] == n_square_features()
    model = load_model("baseline")
    rows = np.asarray(meta["check"]["features"])  # training rows kept with the fit
    for s in SCORES:
        want = np.asarray(meta["check"]["sklearn"][s])
        np.testing.assert_allclose(model.trees[s].predict(rows), want, atol=1e-9)
    assert len(rows) >= 5 and np.ptp(meta["check"]["sklearn"]["overall"]) > 0.5
    # the readable summary beside it says what it was fitted on, and its true size
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["fit"]["n_labeled"] == meta["fit"]["n_labeled"] > 10000
    assert abs(summary["file_kB"] - path.stat().st_size / 1024) < 0.1
    assert path.stat().st_size < 2_000_000


def test_model_names_and_paths():
    assert model_file(None) == model_file("default") == SHIPPED["default"]
    assert model_file("baseline") == SHIPPED["baseline"]
    assert str(model_file("./baseline")) == "baseline"  # a folder of that name: give its path
    assert load_model(None).kind != load_model("baseline").kind


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda r: r.update(format_version=99), "version 99"),
        (lambda r: r["trees"].pop("cracking"), "broken baseline model"),
        (lambda r: r["meta"].update(n_features=3), "broken baseline model"),
        (lambda r: r["trees"]["overall"]["feature"].fill_(500), "beyond the"),
    ],
)
def test_bad_baseline_files_are_one_line_errors_naming_the_file(
    fitted, tmp_path, run_cli, change, problem
):
    record = torch.load(save_baseline(tmp_path / "b.pt", fitted, size=S), weights_only=True)
    change(record)
    bad = tmp_path / "bad_baseline.pt"
    torch.save(record, bad)
    with pytest.raises(InputError, match=problem) as err:
        load_model(bad)
    assert err.value.path == str(bad)
    res = run_cli("screen", "--example", "-o", tmp_path / "out", "-m", bad)
    assert res.code == 1 and "bad_baseline.pt" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_explain_refuses_models_without_attention_in_one_line(tmp_path, run_cli):
    from cryoscout.io.mrc import write_mrc

    ext = tmp_path / "ext"
    ext.mkdir()
    stack = np.random.default_rng(1).normal(size=(3, 40, 40)).astype(np.float32)
    write_mrc(ext / "squares.mrcs", stack, 1000.0, stack=True)
    (ext / "squares.csv").write_text("square_id,x_px,y_px\n1,0,0\n2,1,1\n3,2,2\n")
    res = run_cli("explain", ext, "-o", tmp_path / "out", "-m", "baseline")
    assert res.code == 1 and "Traceback" not in res.err
    assert res.err.strip().splitlines() == [
        "cryoscout: error: baseline: gradient-boosted trees on hand-made features: no "
        "attention maps to draw (explain needs an XCryoNet model, e.g. -m default)"
    ]
    assert not (tmp_path / "out").exists()
    res = run_cli("explain", ext, "-o", tmp_path / "out", "-m", "baselin")
    assert res.code == 1 and "shipped model: default, baseline" in res.err
    # a network without attention branches has nothing to draw either
    from cryoscout.screening.model import XCryoNet
    from cryoscout.screening.predict import save_model

    save_model(tmp_path / "p.pt", XCryoNet("primary", size=S, width=4), "atlas")
    res = run_cli("explain", ext, "-o", tmp_path / "out", "-m", tmp_path / "p.pt")
    assert res.code == 1 and len(res.err.strip().splitlines()) == 1
    assert "p.pt: primary: no attention maps" in res.err
    assert not (tmp_path / "out").exists()
