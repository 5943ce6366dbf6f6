"""`pick predict` on many tomograms: inputs, sharding by rank, resuming, the combined STAR."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from copick_support import new_copick_project
from cryoscout.errors import InputError
from cryoscout.io.mrc import write_mrc
from cryoscout.picking import batch

SHAPE = (16, 24, 24)  # z, y, x
NAMES = ["TS_01", "TS_02", "TS_03"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three small tomograms named as RELION writes them, and a model whose segmentation is
    known: its head ignores the features and says class 1 everywhere, so MP-NMS finds the
    same grid of picks in every tomogram, whichever process picks it."""
    import torch

    from cryoscout.picking.unet import ResUNet3d
    from cryoscout.picking.weights import PickingModelInfo, save_model

    root = tmp_path_factory.mktemp("batch")
    tomos = root / "tomograms"
    tomos.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        write_mrc(tomos / f"rec_{name}.mrc", rng.normal(size=SHAPE).astype(np.float32), 10.0)
    (tomos / "notes.txt").write_text("not a tomogram")
    net = ResUNet3d(1, channels=(4, 8))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 1.0]))
    info = PickingModelInfo(["ribo"], {1: 2.0}, 16, {"method": "standardize"}, 10.0)
    info.extra["particle_radius"] = {"1": 4.0}
    save_model(root / "model.pt", net, info)
    return root, tomos


def _picks(out, name):
    return pd.read_csv(out / f"{name}_picks.csv")


def test_find_tomograms_takes_files_folders_and_patterns(setup, tmp_path):
    _, tomos = setup
    files = sorted(tomos.glob("*.mrc"))
    assert batch.find_tomograms([tomos]) == files  # notes.txt left out
    assert batch.find_tomograms([str(tomos / "rec_TS_0[12].mrc")]) == files[:2]
    # Given twice (a file and its folder): picked once, in the order given.
    assert batch.find_tomograms([files[2], tomos]) == [files[2], files[0], files[1]]
    with pytest.raises(InputError, match="no such file"):
        batch.find_tomograms([tomos / "TS_09.mrc"])
    with pytest.raises(InputError, match="matches no file"):
        batch.find_tomograms([str(tomos / "*.rec")])
    with pytest.raises(InputError, match="no tomogram"):
        batch.find_tomograms([tmp_path])


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_shards_cover_every_item_once(n, world):
    shares = [batch.shard(range(n), r, world) for r in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares[0] == list(range(0, n, world))
    with pytest.raises(ValueError):
        batch.shard(range(n), world, world)


def test_jobs_named_for_relion_and_duplicate_names_refused(setup, tmp_path):
    _, tomos = setup
    jobs = batch.plan_jobs(sorted(tomos.glob("*.mrc")))
    assert [j.name for j in jobs] == NAMES
    assert jobs[0].shape == SHAPE and jobs[0].voxel_size_A == pytest.approx(10.0)
    (tmp_path / "TS_01").mkdir()
    write_mrc(tmp_path / "TS_01" / "tomogram.mrc", np.zeros(SHAPE, np.float32), 10.0)
    with pytest.raises(InputError, match="same tomogram name 'TS_01'"):
        batch.plan_jobs([tomos / "rec_TS_01.mrc", tmp_path / "TS_01" / "tomogram.mrc"])
    with pytest.raises(InputError, match="one tomogram"):
        batch.plan_jobs(sorted(tomos.glob("*.mrc")), tomo_name="TS_99")


def test_predict_many_writes_per_tomogram_files_combined_star_and_resumes(setup, tmp_path, run_cli):
    root, tomos = setup
    out = tmp_path / "picks"
    args = ["pick", "predict", "-m", root, tomos, "-o", out, "--format", "csv,relion5"]
    res = run_cli(*args, "--accelerator", "cpu")
    assert res.code == 0, res.err
    assert "3 picked now, 0 already done" in res.out
    assert res.err.count("tomograms]") == 3 and "[3/3 tomograms]" in res.err
    counts = {}
    for name in NAMES:
        picks = _picks(out, name)
        counts[name] = len(picks)
        assert len(picks) > 0 and set(picks["name"]) == {"ribo"}
        rec = json.loads((out / f"{name}.done.json").read_text())
        assert rec["n_picks"] == len(picks) and rec["tomo_name"] == name
        assert rec["files"] == [f"{name}_picks.csv", f"{name}_picks_relion5.star"]
    # Same segmentation everywhere (class 1 in every voxel): the same picks in each.
    assert len(set(counts.values())) == 1
    combined = _star(out / "picks_relion5.star")
    assert list(combined["rlnTomoName"].unique()) == NAMES
    assert combined["rlnTomoName"].value_counts().to_dict() == counts
    one = _star(out / "TS_02_picks_relion5.star")
    sub = combined[combined["rlnTomoName"] == "TS_02"].reset_index(drop=True)
    pd.testing.assert_frame_equal(sub, one.reset_index(drop=True))
    assert not list(out.glob(".*partial*"))

    # Resume: a tomogram whose record is gone (interrupted before it was written) is
    # picked again; the others are skipped untouched.
    (out / "TS_03.done.json").unlink()
    before = (out / "TS_01_picks.csv").stat().st_mtime_ns
    res = run_cli(*args, "--accelerator", "cpu")
    assert res.code == 0, res.err
    assert "1 picked now, 2 already done" in res.out
    assert (out / "TS_01_picks.csv").stat().st_mtime_ns == before
    assert (out / "TS_03.done.json").is_file()

    # Other settings in the same folder are refused before anything is picked.
    res = run_cli(*args, "--threshold", "0.3", "--accelerator", "cpu")
    assert res.code == 1 and "other settings (threshold)" in res.err
    assert res.err.count("\n") == 1


def test_two_processes_share_the_tomograms_by_rank(setup, tmp_path):
    """Lightning DDP on the CPU (two forked gloo processes): each takes rank::2."""
    root, tomos = setup
    from cryoscout.picking.weights import load_model

    model, info = load_model(root)
    settings = batch.default_settings(model, info, formats=("csv", "relion5"))
    one = batch.predict_many(root, [tomos], tmp_path / "one", settings, accelerator="cpu")
    two = batch.predict_many(
        root, [tomos], tmp_path / "two", settings, accelerator="cpu", devices=2,
        strategy="ddp_fork",
    )  # fmt: skip
    assert two.total == 3 and two.picked == 3
    ranks = {r["tomo_name"]: r["rank"] for r in two.records}
    assert ranks == {"TS_01": 0, "TS_02": 1, "TS_03": 0}
    assert {r["tomo_name"]: r["rank"] for r in one.records} == dict.fromkeys(NAMES, 0)
    for name in NAMES:
        pd.testing.assert_frame_equal(
            _picks(tmp_path / "one", name), _picks(tmp_path / "two", name)
        )
    star = [_star(tmp_path / d / "picks_relion5.star") for d in ("one", "two")]
    pd.testing.assert_frame_equal(*star)
    assert len(star[0]) == sum(r["n_picks"] for r in one.records)


def _star(path):
    import starfile

    table = starfile.read(path)
    return table["particles"] if isinstance(table, dict) else table


def test_a_copick_project_is_picked_run_by_run_and_its_picks_stored(setup, tmp_path, run_cli):
    copick = pytest.importorskip("copick")
    root, _ = setup
    path, project = new_copick_project(tmp_path, [("ribo", 40)])
    rng = np.random.default_rng(1)
    for run_name in ("TS_1", "TS_2"):
        vs = project.new_run(run_name).new_voxel_spacing(10.0)
        for kind in ("denoised", "wbp"):
            vol = rng.normal(size=SHAPE).astype(np.float32)
            vs.new_tomogram(kind).from_numpy(vol, levels=1)
    out = tmp_path / "picks"
    res = run_cli("pick", "predict", "-m", root, path, "-o", out, "--accelerator", "cpu")
    assert res.code == 1 and "choose a tomogram type (has denoised, wbp)" in res.err
    res = run_cli(
        "pick", "predict", "-m", root, path, "-o", out, "--accelerator", "cpu",
        "--copick-tomo-type", "denoised",
    )  # fmt: skip
    assert res.code == 0, res.err
    stored = {}
    for run in copick.from_file(str(path)).runs:
        (picks,) = run.get_picks(user_id="cryoscout", session_id="0")
        assert picks.pickable_object_name == "ribo"
        stored[run.name] = picks.numpy()[0]
    for run_name in ("TS_1", "TS_2"):
        table = _picks(out, run_name)
        assert len(table) > 0
        np.testing.assert_allclose(stored[run_name], table[["x", "y", "z"]].to_numpy() * 10.0)
    assert set(_star(out / "picks_relion5.star")["rlnTomoName"]) == {"TS_1", "TS_2"}


def test_an_interrupted_run_keeps_finished_tomograms_and_resumes(setup, tmp_path):
    import signal

    from cryoscout.interrupt import Interrupted

    root, tomos = setup
    out = tmp_path / "picks"

    def stop_after_first(progress):
        raise Interrupted(signal.SIGTERM)  # as a SLURM time limit would, mid-run

    with pytest.raises(Interrupted) as caught:
        batch.predict_many(root, [tomos], out, accelerator="cpu", on_progress=stop_after_first)
    assert caught.value.signum == signal.SIGTERM
    assert sorted(p.name for p in out.glob("*.done.json")) == ["TS_01.done.json"]
    assert not (out / "picks_relion5.star").exists()  # no combined file that looks complete
    res = batch.predict_many(root, [tomos], out, accelerator="cpu")
    assert (res.skipped, res.picked, res.total) == (1, 2, 3)
    assert (out / "picks_relion5.star").is_file()


def test_max_surround_drops_picks_inside_a_region_of_the_class(setup, tmp_path, run_cli):
    # The model says class 1 everywhere: one region far larger than a particle, which
    # plain MP-NMS fills with a grid of picks and the isolation test empties.
    root, tomos = setup
    args = ["pick", "predict", "-m", root, tomos / "rec_TS_01.mrc", "--format", "csv"]
    res = run_cli(*args, "-o", tmp_path / "plain", "--accelerator", "cpu")
    assert res.code == 0, res.err
    assert len(_picks(tmp_path / "plain", "TS_01")) > 0
    rec = json.loads((tmp_path / "plain" / "TS_01.done.json").read_text())
    assert "max_surround" not in rec["settings"]  # folders picked before the option resume
    out = tmp_path / "isolated"
    res = run_cli(*args, "-o", out, "--max-surround", "0.5", "--accelerator", "cpu")
    assert res.code == 0, res.err
    assert len(_picks(out, "TS_01")) == 0
    assert json.loads((out / "TS_01.done.json").read_text())["settings"]["max_surround"] == 0.5
    res = run_cli(*args, "-o", tmp_path / "bad", "--max-surround", "2")
    assert res.code == 1 and "--max-surround" in res.err and res.err.count("\n") == 1


def test_threshold_per_class_reaches_mp_nms_and_is_recorded(setup, tmp_path, run_cli):
    root, tomos = setup
    args = ["pick", "predict", "-m", root, tomos / "rec_TS_01.mrc", "--format", "csv"]
    res = run_cli(*args, "-o", tmp_path / "one", "--threshold", "0.3", "--accelerator", "cpu")
    assert res.code == 0, res.err
    out = tmp_path / "per_class"
    res = run_cli(*args, "-o", out, "--threshold", "1:0.3", "--accelerator", "cpu")
    assert res.code == 0, res.err
    pd.testing.assert_frame_equal(_picks(out, "TS_01"), _picks(tmp_path / "one", "TS_01"))
    rec = json.loads((out / "TS_01.done.json").read_text())
    assert rec["settings"]["threshold"] == {"1": 0.3}
    # A pooled mean never exceeds 1, so a threshold of 1 leaves no pick.
    res = run_cli(*args, "-o", tmp_path / "none", "--threshold", "1:1", "--accelerator", "cpu")
    assert res.code == 0 and len(_picks(tmp_path / "none", "TS_01")) == 0
    for bad, says in [("1:1.5", "between 0 and 1"), ("2:0.3", "class 2 is not one")]:
        res = run_cli(*args, "-o", tmp_path / "bad", "--threshold", bad)
        assert res.code == 1 and says in res.err and res.err.count("\n") == 1


def test_classes_not_named_keep_the_thresholds_the_model_records(setup, tmp_path, run_cli):
    import torch

    from cryoscout.picking.unet import ResUNet3d
    from cryoscout.picking.weights import PickingModelInfo, save_model

    _, tomos = setup
    net = ResUNet3d(2, channels=(4, 8))
    with torch.no_grad():  # class 1 everywhere, as the fixture's model
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    info = PickingModelInfo(["ribo", "prot"], {1: 2.0, 2: 2.0}, 16, {"method": "standardize"}, 10.0)
    info.extra["particle_radius"] = {"1": 4.0, "2": 4.0}
    info.extra["threshold"] = {"1": 0.4, "2": 0.7}  # as pick train --val-tomogram records
    save_model(tmp_path / "two.pt", net, info)
    model, tomo = tmp_path / "two.pt", tomos / "rec_TS_01.mrc"
    args = ["pick", "predict", "-m", model, tomo, "--format", "csv"]
    for given, recorded in [("1:0.3", {"1": 0.3, "2": 0.7}), ("2:0.2", {"1": 0.4, "2": 0.2})]:
        out = tmp_path / given.replace(":", "_")
        res = run_cli(*args, "-o", out, "--threshold", given, "--accelerator", "cpu")
        assert res.code == 0, res.err
        settings = json.loads((out / "TS_01.done.json").read_text())["settings"]
        assert settings["threshold"] == recorded
