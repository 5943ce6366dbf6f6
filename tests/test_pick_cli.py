"""`cryoscout pick train` and `pick predict` end to end on a tiny tomogram, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoscout.io.mrc import write_mrc

SHAPE = (24, 48, 48)  # z, y, x


def _blobs(path, seed: int) -> pd.DataFrame:
    """Dark Gaussian blobs (sigma 2 voxels) in noise; returns their centres."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    vol = rng.normal(0, 0.3, SHAPE).astype(np.float32)
    centres = [(8 + 16 * (i % 3), 10 + 14 * (i // 3), 12 if i % 2 else 11) for i in range(6)]
    for x, y, z in centres:
        vol -= np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * 2.0**2))
    write_mrc(path, vol, 10.0)
    return pd.DataFrame(centres, columns=["x", "y", "z"]).assign(**{"class": 1})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pick")
    truth = _blobs(root / "t1.mrc", 0)
    truth[["class", "x", "y", "z"]].to_csv(root / "t1.csv", index=False)
    _blobs(root / "t2.mrc", 1)[["class", "x", "y", "z"]].to_csv(root / "t2.csv", index=False)
    return root, truth


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    from cryoscout.cli.main import main

    root, _ = data
    run = root / "run"
    code = main(
        [
            "pick", "train", str(root / "t1.mrc"), str(root / "t1.csv"), "-o", str(run),
            "--radius", "2", "--patch", "16", "--channels", "4,8", "--epochs", "2",
            "--batch-size", "2", "--samples-per-epoch", "4", "--seed", "1",
            "--accelerator", "cpu", "--val-tomogram", str(root / "t1.mrc"),
            "--val-coords", str(root / "t1.csv"), "--val-tomogram", str(root / "t2.mrc"),
            "--val-coords", str(root / "t2.csv"), "--val-every", "1", "--val-radius", "3",
            "--class-names", "blob",
        ]
    )  # fmt: skip
    assert code == 0
    return run


def test_train_writes_run_folder(trained):
    import yaml

    assert (trained / "model.pt").is_file()
    metrics = pd.read_csv(trained / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert metrics["train_loss"].between(0, 1).all()  # soft Dice
    assert metrics["val_f1"].between(0, 1).all()
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["config"]["n_particles"] == 6
    # Both validation tomograms, in order, recorded with their annotations.
    assert [Path(p).name for p in config["config"]["val_tomograms"]] == ["t1.mrc", "t2.mrc"]
    assert [Path(p).name for p in config["config"]["val_coords"]] == ["t1.csv", "t2.csv"]
    assert config["config"]["class_names"] == ["blob"]
    assert not list(trained.glob(".*partial*"))
    assert config["config"]["loss"] == "dice"


def test_train_records_particle_radius_for_predict(trained):
    from cryoscout.picking.weights import load_model

    _, info = load_model(trained / "model.pt")
    assert info.radius == {1: 2.0}  # the label radius
    assert info.extra["particle_radius"] == {"1": 3.0}  # --val-radius, sizes MP-NMS


def test_train_chooses_thresholds_per_class_that_predict_uses(trained, data, tmp_path, run_cli):
    import json

    import yaml

    from cryoscout.picking.thresholds import GRID
    from cryoscout.picking.weights import load_model

    _, info = load_model(trained / "model.pt")
    assert set(info.extra["threshold"]) == {"1"} and info.extra["threshold"]["1"] in GRID
    config = yaml.safe_load((trained / "config.yaml").read_text())["config"]
    assert config["threshold"] == info.extra["threshold"]
    assert 0 <= config["val_f1_at_threshold"]["blob"] <= 1
    root, _ = data
    out = tmp_path / "picks"
    res = run_cli("pick", "predict", "-m", trained, root / "t1.mrc", "-o", out, "--format", "csv")
    assert res.code == 0, res.err
    settings = json.loads((out / "t1.done.json").read_text())["settings"]
    assert settings["threshold"] == info.extra["threshold"]


def test_predict_writes_star_that_starfile_reads(trained, data, tmp_path, run_cli):
    import mrcfile
    import starfile

    root, _ = data
    out = tmp_path / "picks"
    res = run_cli(
        "pick", "predict", "-m", trained, root / "t1.mrc", "-o", out,
        "--format", "relion5,coords,csv", "--threshold", "0", "--save-probabilities",
    )  # fmt: skip
    assert res.code == 0, res.err
    star = starfile.read(out / "t1_picks_relion5.star")
    table = star["particles"] if isinstance(star, dict) else star
    assert {"rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnClassNumber"} <= set(table.columns)
    csv = pd.read_csv(out / "t1_picks.csv")
    assert len(table) == len(csv)
    assert {"class", "x", "y", "z", "score"} <= set(csv.columns)
    if len(csv):
        assert csv["x"].between(0, SHAPE[2]).all() and csv["z"].between(0, SHAPE[0]).all()
    # RELION 4 (tilt-series pixels) of a 10 Å tomogram needs the tilt-series pixel size,
    # which `pick predict` does not take yet: tests/test_coords.py checks the units.
    with mrcfile.open(out / "t1_segmentation.mrc") as seg:
        assert seg.data.shape == SHAPE and seg.data.max() <= 1
        assert abs(float(seg.voxel_size.x) - 10.0) < 1e-3
    assert (out / "t1_scores.mrc").is_file() and (out / "t1_picks.coords").is_file()


def test_bad_inputs_give_one_line_errors(trained, data, tmp_path, run_cli):
    import torch

    root, truth = data
    not_mrc = tmp_path / "notes.mrc"
    not_mrc.write_text("hello")
    res = run_cli("pick", "predict", "-m", trained, not_mrc, "-o", tmp_path / "o1")
    assert res.code == 1 and res.err.count("\n") == 1 and "notes.mrc" in res.err
    assert not (tmp_path / "o1").exists()

    outside = truth.copy()
    outside.loc[0, "x"] = 500
    outside.to_csv(tmp_path / "out.csv", index=False)
    res = run_cli(
        "pick", "train", root / "t1.mrc", tmp_path / "out.csv", "-o", tmp_path / "r1",
        "--radius", "2", "--patch", "16", "--channels", "4,8", "--epochs", "1",
    )  # fmt: skip
    assert res.code == 1 and "outside" in res.err and res.err.count("\n") == 1
    assert not (tmp_path / "r1" / "model.pt").exists()

    res = run_cli(
        "pick", "train", root / "t1.mrc", root / "t1.csv", "-o", tmp_path / "r2",
        "--radius", "2:3,3:3", "--patch", "16", "--channels", "4,8", "--epochs", "1",
    )  # fmt: skip
    assert res.code == 1 and "unknown class 1" in res.err

    res = run_cli(
        "pick", "train", root / "t1.mrc", root / "t1.csv", "-o", tmp_path / "r3",
        "--radius", "2", "--patch", "16", "--channels", "4,8", "--epochs", "1",
        "--val-tomogram", root / "t1.mrc", "--val-tomogram", root / "t2.mrc",
        "--val-coords", root / "t1.csv",
    )  # fmt: skip
    assert res.code == 1 and res.err.count("\n") == 1
    assert "--val-tomogram" in res.err and "2 tomograms, 1 coordinate files" in res.err
    assert not (tmp_path / "r3").exists()

    record = torch.load(trained / "model.pt", weights_only=True)
    record["architecture"] = "xcryonet"
    (tmp_path / "other").mkdir()
    torch.save(record, tmp_path / "other" / "model.pt")
    res = run_cli(
        "pick", "predict", "-m", tmp_path / "other", root / "t1.mrc", "-o", tmp_path / "o2"
    )
    assert res.code == 1 and "another architecture" in res.err and res.err.count("\n") == 1

    res = run_cli(
        "pick", "predict", "-m", trained, root / "t1.mrc", "-o", tmp_path / "o3", "--format", "pdf"
    )
    assert res.code == 1 and "unknown format" in res.err


def test_train_takes_negatives_per_tomogram(trained, data, tmp_path, run_cli):
    import yaml

    root, _ = data
    # A simulator's distractors.csv: a gold bead (its centre) and a vesicle (12 points on
    # its membrane), both away from the blobs.
    negatives = tmp_path / "distractors.csv"
    pd.DataFrame(
        {"kind": ["gold", "membrane"], "x": [40, 24], "y": [44, 30], "z": [5, 12], "radius": [1, 5]}
    ).to_csv(negatives, index=False)
    common = (
        "--radius", "2", "--patch", "16", "--channels", "4,8", "--epochs", "1",
        "--batch-size", "2", "--samples-per-epoch", "4", "--accelerator", "cpu",
    )  # fmt: skip
    run = tmp_path / "run"
    res = run_cli(
        "pick", "train", root / "t1.mrc", root / "t1.csv", "-o", run, *common,
        "--negatives", negatives, "--negative-fraction", "0.5",
    )  # fmt: skip
    assert res.code == 0, res.err
    config = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert config["n_negative_points"] == 13
    assert config["distractor_fraction"] == 0.5
    assert config["negatives"] == [str(negatives)]
    before = yaml.safe_load((trained / "config.yaml").read_text())["config"]
    assert before["n_negative_points"] == 0 and before["distractor_fraction"] == 0.0

    res = run_cli(
        "pick", "train", root / "t1.mrc", root / "t1.csv", "-o", tmp_path / "r2", *common,
        "--negatives", negatives, "--negatives", negatives,
    )  # fmt: skip
    assert res.code == 1 and "one file per tomogram" in res.err and res.err.count("\n") == 1
    outside = tmp_path / "outside.csv"
    pd.DataFrame({"x": [500], "y": [1], "z": [1]}).to_csv(outside, index=False)
    res = run_cli(
        "pick", "train", root / "t1.mrc", root / "t1.csv", "-o", tmp_path / "r3", *common,
        "--negatives", outside,
    )  # fmt: skip
    assert res.code == 1 and "outside.csv" in res.err and "outside the" in res.err
    assert not (tmp_path / "r3" / "model.pt").exists()
