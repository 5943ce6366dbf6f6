"""Interrupted runs exit non-zero and say how to resume; `pick train --resume` continues them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cryoscout.io.mrc import write_mrc

REPO_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@pytest.fixture(scope="module")
def tomo(tmp_path_factory):
    """A 24x32x32 tomogram with four dark blobs and their centres."""
    root = tmp_path_factory.mktemp("interrupt")
    rng = np.random.default_rng(0)
    shape = (24, 32, 32)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    vol = rng.normal(0, 0.3, shape).astype(np.float32)
    centres = [(8, 8, 12), (24, 8, 11), (8, 24, 12), (24, 24, 11)]
    for x, y, z in centres:
        vol -= np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / 8.0)
    write_mrc(root / "t1.mrc", vol, 10.0)
    pd.DataFrame(centres, columns=["x", "y", "z"]).assign(**{"class": 1}).to_csv(
        root / "t1.csv", index=False
    )
    return root


def _train_args(root, run, epochs: int) -> list[str]:
    return [
        "pick", "train", str(root / "t1.mrc"), str(root / "t1.csv"), "-o", str(run),
        "--radius", "2", "--patch", "16", "--channels", "4,8", "--epochs", str(epochs),
        "--batch-size", "2", "--samples-per-epoch", "2", "--seed", "3", "--accelerator", "cpu",
        "--class-names", "blob",
    ]  # fmt: skip


def _start(args: list[str], progress: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO_SRC)
    env.pop("CRYOSCOUT_NO_PROGRESS", None)
    if progress:
        env["CRYOSCOUT_PROGRESS"] = "1"  # bars on stderr although it is a pipe
    else:
        env["CRYOSCOUT_NO_PROGRESS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "cryoscout.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _stop_after(proc: subprocess.Popen, marker: str, signum: int) -> tuple[int, str]:
    """Send ``signum`` once stderr shows ``marker``; return the exit status and all of stderr."""
    seen = ""
    while marker not in seen:
        char = proc.stderr.read(1)
        if not char:  # ended before the marker
            break
        seen += char
    else:
        proc.send_signal(signum)
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, seen + rest


def test_sigterm_stops_pick_train_and_resume_finishes_it(tomo, tmp_path, run_cli):
    run = tmp_path / "run"
    epochs = 12
    proc = _start(_train_args(tomo, run, epochs))
    code, err = _stop_after(proc, f"epoch 2/{epochs}", signal.SIGTERM)
    assert code == 143, err
    assert "interrupted by SIGTERM" in err and "--resume" in err.splitlines()[-1]
    assert "loss" in err and "ETA" in err  # the per-epoch lines
    assert not (run / "model.pt").exists()  # nothing that looks finished
    assert (run / "checkpoints" / "last.ckpt").is_file()
    done = len(pd.read_csv(run / "metrics.csv"))
    assert 2 <= done < epochs

    # Starting afresh over the run would mix two runs: refused, with the way out.
    res = run_cli(*_train_args(tomo, run, epochs))
    assert res.code == 1 and "--resume" in res.err

    resume = err.splitlines()[-1].split("resume with: ", 1)[1].split()
    assert resume[:3] == [resume[0], "pick", "train"] and resume[-1] == "--resume"
    res = run_cli(*resume[1:])
    assert res.code == 0, res.err
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, epochs + 1))  # earlier rows kept, no repeats
    assert metrics["elapsed_s"].is_monotonic_increasing
    assert (run / "model.pt").is_file()
    assert "blob" in res.out  # class names, not numbers

    # The resumed run is the run that was never interrupted: same patches, same schedule.
    straight = tmp_path / "straight"
    assert run_cli(*_train_args(tomo, straight, epochs)).code == 0
    expected = pd.read_csv(straight / "metrics.csv")
    np.testing.assert_allclose(metrics["train_loss"], expected["train_loss"], rtol=1e-4)


def test_resume_without_checkpoint_is_an_input_error(tomo, tmp_path, run_cli):
    res = run_cli(*_train_args(tomo, tmp_path / "new", 2), "--resume")
    assert res.code == 1 and "nothing to resume" in res.err and res.err.count("\n") == 1


def test_ctrl_c_stops_any_command_with_status_130(tmp_path):
    proc = _start(
        ["simulate", "tomogram", str(tmp_path / "sim"), "--shape", "200,200,100", "--seed", "1"],
        progress=True,
    )
    code, err = _stop_after(proc, "placing particles", signal.SIGINT)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (
        "cryoscout: interrupted by Ctrl-C; run the same command again to redo it"
    )
    assert not (tmp_path / "sim" / "tomogram.mrc").exists()
