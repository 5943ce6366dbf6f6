"""Training: the `cryoscout train` command end to end, FS vs SS data use, data loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cryoscout.io.mrc import write_mrc
from cryoscout.screening.data import (
    ScreeningData,
    load_screening_data,
    make_split,
    normalise,
    training_dataset,
)
from cryoscout.screening.model import SCORES
from cryoscout.screening.module import XCryoNetModule, fit

S = 32


def make_extraction(folder, n: int = 24, seed: int = 0, labeled: bool = True):
    """A minimal extraction folder: squares.mrcs, squares.csv and labels.csv."""
    rng = np.random.default_rng(seed)
    stack = np.empty((n, S, S), np.float32)
    labels = np.empty((n, 5), np.float32)
    for i in range(n):
        level = rng.uniform(0.2, 1.0)
        img = level + rng.normal(0, 0.05, (S, S))
        blobs = int(rng.integers(0, 5))
        for _ in range(blobs):
            r, c = rng.integers(4, S - 4, 2)
            img[r - 3 : r + 3, c - 3 : c + 3] = 0.0
        stack[i] = img
        labels[i] = [level * 4, 3.0, 0.0, float(blobs), 4.0 - 0.5 * blobs]
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / "squares.mrcs", stack, pixel_size_A=500.0, stack=True)
    ids = np.arange(1, n + 1)
    pd.DataFrame({"square_id": ids, "x_px": ids * 10, "y_px": ids * 10}).to_csv(
        folder / "squares.csv", index=False
    )
    if labeled:
        table = pd.DataFrame(labels, columns=list(SCORES))
        table.insert(0, "square_id", ids)
        table.to_csv(folder / "labels.csv", index=False)
    return stack, labels


def test_train_command_writes_a_loadable_run(tmp_path, run_cli):
    make_extraction(tmp_path / "ext", n=20)
    run = tmp_path / "run"
    res = run_cli(
        "train", tmp_path / "ext", "-o", run, "--epochs", "1", "--size", "32", "--width", "4",
        "--batch-size", "8", "--accelerator", "cpu", "--unlabeled", "-1",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "model.pt" in res.out
    assert "epoch 1/1  primary loss" in res.err and "held-out |error|" in res.err  # per epoch
    record = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert record["meta"]["variant"] == "xcryonet" and record["meta"]["size"] == 32
    assert any(k.startswith("fusion.") for k in record["state_dict"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert "train" in config["command"] and config["cryoscout_version"]
    assert config["config"]["n_labeled"] == 16 and config["config"]["n_test"] == 4
    assert set(config["config"]["test_mean_abs_diff"]) == set(SCORES)
    assert (run / "metrics.csv").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    # Resuming continues from the checkpoint to the new epoch count.
    res2 = run_cli(
        "train", tmp_path / "ext", "-o", run, "--epochs", "2", "--size", "32", "--width", "4",
        "--batch-size", "8", "--accelerator", "cpu", "--resume",
    )  # fmt: skip
    assert res2.code == 0, res2.err
    assert "epoch 2/2" in res2.err and "epoch 1/2" not in res2.err  # only the epoch left
    epochs = pd.read_csv(run / "metrics.csv")["epoch"].dropna()
    assert set(epochs) == {0, 1}  # the log keeps the epoch before the resume


def test_train_command_rejects_bad_input_in_one_line(tmp_path, run_cli):
    res = run_cli("train", tmp_path / "missing", "-o", tmp_path / "run", "--size", "32")
    assert res.code == 1
    assert res.err.count("\n") == 1 and "missing" in res.err
    make_extraction(tmp_path / "unlabeled", n=6, labeled=False)
    res = run_cli("train", tmp_path / "unlabeled", "-o", tmp_path / "run", "--size", "32")
    assert res.code == 1 and "no labeled squares" in res.err
    assert not (tmp_path / "run" / "model.pt").exists()
    res = run_cli("train", tmp_path / "unlabeled", "-o", tmp_path / "r", "--variant", "vgg")
    assert res.code == 1 and "--variant" in res.err


def test_labels_with_missing_columns_and_rows_become_nan(tmp_path):
    make_extraction(tmp_path / "ext", n=6)
    labels = pd.read_csv(tmp_path / "ext" / "labels.csv")
    labels[["square_id", "cracking"]].iloc[:4].to_csv(tmp_path / "ext" / "labels.csv", index=False)
    data = load_screening_data([tmp_path / "ext"], size=16)
    assert data.images.shape == (6, 16, 16)
    crack = SCORES.index("cracking")
    assert np.all(~np.isnan(data.labels[:4, crack])) and np.all(np.isnan(data.labels[4:]))
    assert np.all(np.isnan(np.delete(data.labels, crack, axis=1)))
    assert list(data.labeled) == [True] * 4 + [False] * 2


def test_atlas_normalisation_keeps_relative_brightness():
    stack = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)]).astype(np.float32)
    atlas = normalise(stack, "atlas")
    assert atlas[1].mean() > atlas[0].mean()
    np.testing.assert_allclose(normalise(stack, "square"), 0.0)


def test_by_grid_split_keeps_test_atlases_out_of_training():
    n = 30
    data = ScreeningData(
        images=np.zeros((n, 8, 8), np.float32),
        labels=np.ones((n, 5), np.float32),
        atlas=np.repeat([0, 1, 2], 10),
        square_id=np.arange(n),
    )
    split = make_split(data, n_labeled=5, n_unlabeled=100, seed=0, test_atlases=[2])
    assert set(data.atlas[split.test]) == {2} and len(split.test) == 10
    used = np.concatenate([split.labeled, split.unlabeled])
    assert not np.isin(data.atlas[used], [2]).any()
    assert len(split.labeled) == 5 and len(np.intersect1d(split.labeled, split.unlabeled)) == 0


def _fit_weights(data: ScreeningData, semi: bool, tmp_path) -> dict[str, torch.Tensor]:
    split = make_split(data, n_labeled=8, n_unlabeled=8, seed=0, test_fraction=0.0)
    ds = training_dataset(data, split, semi_supervised=semi)
    torch.manual_seed(0)
    module = XCryoNetModule("xcryonet", size=S, width=4)
    fit(module, ds, tmp_path, epochs=1, batch_size=4, seed=0, accelerator="cpu")
    return {k: v.clone() for k, v in module.net.state_dict().items()}


def test_fully_supervised_training_ignores_unlabeled_squares(tmp_path):
    labeled_stack, labels = make_extraction(tmp_path / "a", n=8, seed=1)
    other = np.random.default_rng(5).normal(size=(8, S, S)).astype(np.float32)

    def dataset(unlabeled: np.ndarray) -> ScreeningData:
        return ScreeningData(
            images=np.concatenate([normalise(labeled_stack), normalise(unlabeled)]),
            labels=np.concatenate([labels, np.full((8, 5), np.nan, np.float32)]),
            atlas=np.repeat([0, 1], 8),
            square_id=np.arange(16),
        )

    data_a, data_b = dataset(other), dataset(-3 * other + 1)
    fs_a = _fit_weights(data_a, False, tmp_path / "fa")
    fs_b = _fit_weights(data_b, False, tmp_path / "fb")
    for k in fs_a:
        torch.testing.assert_close(fs_a[k], fs_b[k], msg=k)
    # Semi-supervised training does use them: its weights depend on the unlabeled squares.
    ss_a = _fit_weights(data_a, True, tmp_path / "sa")
    ss_b = _fit_weights(data_b, True, tmp_path / "sb")
    assert any(not torch.equal(ss_a[k], ss_b[k]) for k in ss_a)


@pytest.mark.parametrize("seed", [0, 1])
def test_appearance_randomisation_keeps_shape_and_mean(seed):
    from cryoscout.screening.augment import randomise_appearance

    rng = np.random.default_rng(seed)
    square = np.random.default_rng(9).normal(size=(S, S)).astype(np.float32)
    original = square.copy()
    outs = [randomise_appearance(square, rng) for _ in range(20)]
    assert all(o.shape == (S, S) and o.dtype == np.float32 for o in outs)
    assert not all(np.allclose(o, square) for o in outs)
    # Brightness is a label: no transform may shift a square's mean much.
    assert max(abs(float(o.mean()) - float(square.mean())) for o in outs) < 0.3
    np.testing.assert_array_equal(square, original)  # the input is not modified


def test_table1_summary_is_mean_and_std_over_runs():
    from cryoscout.screening.table1 import summarise, to_markdown

    runs = pd.DataFrame(
        [
            {"split": "random", "method": "xcryonet", "supervision": "SS", "n_labeled": 100,
             "n_unlabeled": 1500, "run": r, **dict.fromkeys(SCORES, v), "n_test": 10,
             "train_s": 1.0, "squares_per_s": 5.0}
            for r, v in enumerate([1.0, 2.0])
        ]
    )  # fmt: skip
    summary = summarise(runs)
    assert len(summary) == 1 and summary["runs"].iloc[0] == 2
    assert summary["overall_mean"].iloc[0] == pytest.approx(1.5)
    assert summary["overall_std"].iloc[0] == pytest.approx(np.std([1.0, 2.0], ddof=1))
    md = to_markdown(summary)
    assert "| random | xcryonet | SS | 100 | 1500 | 1.50 ± 0.71 |" in md


def test_table1_without_the_random_split_holds_out_whole_atlases_only():
    from cryoscout.screening.table1 import Table1Config, run_table1

    rng = np.random.default_rng(0)
    n = 60
    data = ScreeningData(
        images=rng.normal(size=(n, 8, 8)).astype(np.float32),
        labels=rng.integers(0, 5, size=(n, 5)).astype(np.float32),
        atlas=np.repeat([0, 1, 2], 20),
        square_id=np.arange(n),
    )
    features = rng.normal(size=(n, 4))
    cfg = Table1Config(labeled=[20], unlabeled=0, runs=2, methods=[], random_split=False)
    rows = run_table1(data, cfg, features=features)
    # One baseline row per run, each scored on all 20 squares of the atlas held out.
    assert list(rows["split"]) == ["by-grid", "by-grid"]
    assert list(rows["n_test"]) == [20, 20]
    both = run_table1(data, Table1Config(labeled=[20], unlabeled=0, runs=1, methods=[]), features)
    assert sorted(both["split"]) == ["by-grid", "random"]
