"""Run folders are whole or visibly not: staging, locking, kill-and-rerun, safe names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.io.runfolder import (
    INCOMPLETE,
    check_complete,
    lock_folder,
    resumable_run_folder,
    run_folder,
)
from cryoscout.io.squares import read_extraction

REPO = Path(__file__).resolve().parents[1]


def one_line(result, *fragments: str) -> str:
    assert result.code != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# --------------------------------------------------------------------------- the module


def test_run_folder_appears_only_when_complete(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), run_folder(out) as folder:
        (folder / "scores.csv").write_text("half")
        raise RuntimeError("killed half-way")
    assert not out.exists()
    assert leftovers(out) == []  # no staging folder nor lock file left behind
    with run_folder(out) as folder:
        (folder / "config.yaml").write_text("a: 1\n")
        (folder / "first.txt").write_text("1")
    with run_folder(out) as folder:  # an earlier run is replaced whole
        (folder / "config.yaml").write_text("a: 2\n")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_run_folder_refuses_a_folder_of_other_files_before_any_work(tmp_path):
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "precious.mrc").write_text("x")
    with pytest.raises(InputError, match="not a cryoscout run"), run_folder(out):
        pytest.fail("the work must not start")
    assert (out / "precious.mrc").read_text() == "x"


def test_concurrent_run_is_refused_in_one_line(tmp_path, run_cli):
    out = tmp_path / "out"
    with lock_folder(out.absolute()):
        res = run_cli("extract", tmp_path / "missing.mrc", "-o", out)
    one_line(res, str(out), "another cryoscout run")


def test_unwritable_output_is_refused_before_the_work(tmp_path, run_cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line(run_cli("extract", tmp_path / "x.mrc", "-o", blocker / "out"), "not a folder")
    if Path("/proc/self").is_dir():  # a read-only file system stops root too
        one_line(run_cli("screen", "--example", "-o", "/proc/cryoscout-out"), "not writable")


def test_check_complete_refuses_staging_and_marked_folders(tmp_path):
    staging = tmp_path / ".ext.partial-123"
    staging.mkdir()
    with pytest.raises(InputError, match="interrupted run"):
        check_complete(staging)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), resumable_run_folder(run) as folder:
        (folder / "metrics.csv").write_text("epoch\n0\n")
        raise RuntimeError("killed")
    assert (run / INCOMPLETE).is_file()
    with pytest.raises(InputError, match="incomplete"):
        check_complete(run)
    with pytest.raises(InputError, match="holds an interrupted run: add --resume"):
        with resumable_run_folder(run):
            pass
    with resumable_run_folder(run, resume=True):
        pass
    assert check_complete(run) == run


def test_resumable_run_that_fails_on_its_input_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(InputError), resumable_run_folder(run):
        raise InputError("x.csv", "bad")
    assert not run.exists()


# --------------------------------------------------------------------------- kill and rerun


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> Path:
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas, write_simulated_atlas

    cfg = AtlasConfig(
        mesh=400, pixel_size_nm=600.0, rotation_deg=52.0, tiles_x=2, tiles_y=2, tile_size=512
    )
    return write_simulated_atlas(simulate_atlas(cfg, seed=11), tmp_path_factory.mktemp("a"), "mrc")


def killed_run(module: str, function: str, *args) -> subprocess.CompletedProcess:
    """Run ``cryoscout ARGS`` in a new process that SIGKILLs itself in ``module.function``."""
    script = (
        "import os, signal, sys, importlib\n"
        f"m = importlib.import_module({module!r})\n"
        f"setattr(m, {function!r}, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))\n"
        "from cryoscout.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), CRYOSCOUT_NO_PROGRESS="1")
    cmd = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_extract_killed_mid_run_leaves_no_extraction_and_reruns(atlas, tmp_path, run_cli):
    out = tmp_path / "ext"
    proc = killed_run("cryoscout.report.overview", "render_overview", "extract", atlas, "-o", out)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()  # squares.csv and squares.mrcs were written, but not here
    (staging,) = [tmp_path / n for n in leftovers(out) if ".partial-" in n]
    assert (staging / "squares.csv").is_file()
    with pytest.raises(InputError, match="interrupted run"):
        read_extraction(staging)
    assert run_cli("extract", atlas, "-o", out, "--size", "32").code == 0
    assert len(read_extraction(out).table) > 0
    assert not [n for n in leftovers(out) if ".partial-" in n]


def test_screen_killed_before_its_report_leaves_no_screen_and_reruns(atlas, tmp_path, run_cli):
    out = tmp_path / "screen"
    proc = killed_run("cryoscout.report.html", "write_report", "screen", atlas, "-o", out)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    (staging,) = [tmp_path / n for n in leftovers(out) if ".partial-" in n]
    assert (staging / "scores.csv").is_file() and not (staging / "report.html").exists()
    res = run_cli("screen", atlas, "-o", out, "--top-k", "3")
    assert res.code == 0, res.err
    assert (out / "report.html").is_file() and (out / "targets.csv").is_file()
    assert not staging.exists()


def _extraction(folder: Path, n: int = 16, size: int = 32) -> Path:
    from cryoscout.io.mrc import write_mrc

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    write_mrc(folder / "squares.mrcs", rng.normal(size=(n, size, size)), 500.0, stack=True)
    ids = np.arange(1, n + 1)
    pd.DataFrame({"square_id": ids, "x_px": ids, "y_px": ids}).to_csv(
        folder / "squares.csv", index=False
    )
    labels = pd.DataFrame({"square_id": ids, "overall": rng.uniform(0, 4, n)})
    labels.to_csv(folder / "labels.csv", index=False)
    return folder


def test_train_killed_before_saving_is_marked_incomplete_and_resumes(tmp_path, run_cli):
    from cryoscout.screening.predict import load_model

    ext = _extraction(tmp_path / "ext")
    run = tmp_path / "run"
    opts = ["--epochs", "1", "--size", "32", "--width", "4", "--batch-size", "8"]
    opts += ["--accelerator", "cpu"]
    proc = killed_run("cryoscout.screening.predict", "save_model", "train", ext, "-o", run, *opts)
    assert proc.returncode == -9, proc.stderr
    assert (run / INCOMPLETE).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(InputError, match="incomplete training run"):
        load_model(run)
    one_line(run_cli("train", ext, "-o", run, *opts), "earlier run", "--resume")
    res = run_cli("train", ext, "-o", run, *opts[2:], "--epochs", "2", "--resume")
    assert res.code == 0, res.err
    assert not (run / INCOMPLETE).exists()
    assert load_model(run).size == 32
    assert set(pd.read_csv(run / "metrics.csv")["epoch"].dropna()) == {0, 1}


def test_run_killed_before_its_first_checkpoint_says_so(tmp_path, run_cli):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), resumable_run_folder(run) as folder:
        (folder / "metrics.csv").write_text("epoch\n")
        raise RuntimeError("killed")
    ext = _extraction(tmp_path / "ext")
    res = run_cli("train", ext, "-o", run, "--epochs", "1", "--size", "32")
    one_line(res, "interrupted run", "--resume")


def test_resume_from_a_checkpoint_of_another_shape_is_one_line(tmp_path, run_cli):
    import shutil

    ext = _extraction(tmp_path / "ext")
    base = ["--epochs", "1", "--size", "32", "--batch-size", "8", "--accelerator", "cpu"]
    assert run_cli("train", ext, "-o", tmp_path / "a", "--width", "4", *base).code == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    res = run_cli("train", ext, "-o", tmp_path / "b", "--width", "8", "--resume", *base)
    one_line(res, "last.ckpt", "does not fit this network")


# --------------------------------------------------------------------------- names from data


def test_explain_keeps_file_names_from_data_inside_its_folder(tmp_path, run_cli):
    from cryoscout.io.mrc import write_mrc

    ext = tmp_path / "deep" / "er" / "ext"
    ext.mkdir(parents=True)
    write_mrc(ext / "squares.mrcs", np.random.default_rng(0).normal(size=(2, 32, 32)), 500.0)
    pd.DataFrame({"square_id": ["/../../../X", "7"], "x_px": [1, 2], "y_px": [1, 2]}).to_csv(
        ext / "squares.csv", index=False
    )
    out = tmp_path / "deep" / "er" / "explain"
    res = run_cli("explain", ext, "-o", out)
    assert res.code == 0, res.err
    assert not list(tmp_path.rglob("X.png"))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "scores.csv", "square_7.png", "square__._._._X.png"]


def test_pick_train_killed_before_saving_is_marked_incomplete_and_resumes(tmp_path, run_cli):
    from cryoscout.io.mrc import write_mrc
    from cryoscout.picking.weights import load_model

    rng = np.random.default_rng(0)
    write_mrc(tmp_path / "t.mrc", rng.normal(size=(16, 24, 24)).astype(np.float32), 10.0)
    pd.DataFrame({"class": [1, 1], "x": [6, 16], "y": [6, 16], "z": [8, 8]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    run = tmp_path / "run"
    args = ["pick", "train", tmp_path / "t.mrc", tmp_path / "t.csv", "-o", run, "--radius", "2"]
    args += ["--patch", "8", "--channels", "2,4", "--epochs", "1", "--batch-size", "1"]
    args += ["--samples-per-epoch", "1", "--accelerator", "cpu"]
    proc = killed_run("cryoscout.picking.weights", "save_model", *args)
    assert proc.returncode == -9, proc.stderr
    assert (run / INCOMPLETE).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(InputError, match="incomplete training run"):
        load_model(run)
    res = run_cli(*args, "--resume")
    assert res.code == 0, res.err
    assert not (run / INCOMPLETE).exists()
    assert load_model(run)[1].class_names


def test_simulated_tomogram_folder_appears_whole(tmp_path, run_cli, monkeypatch):
    import cryoscout.runinfo as runinfo

    out = tmp_path / "sim"
    args = ["simulate", "tomogram", out, "--seed", "1", "--shape", "32,32,16"]
    args += ["--particles", "2", "--tilt-step", "15"]
    real = runinfo.write_run_config

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runinfo, "write_run_config", fail)
    line = one_line(run_cli(*args), "No space left")
    assert line.startswith("cryoscout: error:")
    assert not out.exists() and leftovers(out) == []
    monkeypatch.setattr(runinfo, "write_run_config", real)
    assert run_cli(*args).code == 0
    assert (out / "tomogram.mrc").is_file() and (out / "config.yaml").is_file()
