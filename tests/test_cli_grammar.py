"""One command-line grammar: -h everywhere, real metavars and defaults, shared option names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from cryoscout.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def _commands(group=None, path=()):
    """Every leaf command of the CLI as ``(path, click command)``."""
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


COMMANDS = sorted(" ".join(p) for p, _ in _commands())


@pytest.mark.parametrize("command", COMMANDS)
def test_h_shows_real_metavars_and_defaults(command, run_cli):
    res = run_cli(*command.split(), "-h")
    assert res.code == 0, res.err
    text = res.out
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: cryoscout {command} [OPTIONS]")
    assert "{" not in usage  # typer's {out}
    assert not re.search(r"<(list\[|int>|float>|str>|path>|Path>)", text)  # typer's <list[Path]>
    assert "-h, --help" in text
    assert "[default: -1]" not in text  # "automatic" is said in words, not as a sentinel
    for name in ("--out", "--model", "--top-k"):
        if re.search(rf"\s{name}\b", text):
            short = {"--out": "-o", "--model": "-m", "--top-k": "-k"}[name]
            assert f"{short}, {name}" in text, f"{command}: {name} without {short}"
    assert "--output" not in text or command in ("pick predict", "pick evaluate")
    assert "--top " not in text


def test_examples_are_printed_as_written(run_cli):
    text = run_cli("pick", "train", "-h").out
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "$ cryoscout pick train sim1" in ln)
    # A shell continuation stays at the end of its line, and the next line follows it.
    assert lines[start].endswith("sim1/particles.csv \\")
    assert lines[start + 1].strip().startswith("sim2/tomogram.mrc sim2/particles.csv")


def test_every_command_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [c for c in COMMANDS if f"cryoscout {c} " not in readme]
    assert not missing, f"commands without a README example: {missing}"


def test_seed_is_the_same_option_in_both_simulators():
    group = typer.main.get_command(app).commands["simulate"]
    seeds = [
        next(p for p in group.commands[name].params if p.name == "seed")
        for name in ("atlas", "tomogram")
    ]
    assert {(p.default, p.required, p.help) for p in seeds} == {(0, False, seeds[0].help)}


def test_pick_train_pairs_tomograms_with_annotations_in_order():
    from cryoscout.cli.pick_train import pair_files
    from cryoscout.errors import InputError

    t1, t2, c1, c2 = (Path(p) for p in ("a/t.mrc", "b/t.rec", "a/p.csv", "b/p.star"))
    assert pair_files([t1, c1, t2, c2]) == ([t1, t2], [c1, c2])
    assert pair_files([t1, t2, c1, c2]) == ([t1, t2], [c1, c2])
    with pytest.raises(InputError, match="one annotation file per tomogram"):
        pair_files([t1, t2, c1])


def test_explain_reads_a_screen_folder_like_an_extraction_folder(tmp_path, run_cli):
    import pandas as pd
    import torch

    from cryoscout.io.mrc import write_mrc
    from cryoscout.screening.model import XCryoNet
    from cryoscout.screening.predict import save_model

    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", XCryoNet("xcryonet", size=32, width=4), "atlas")
    stack = np.random.default_rng(1).normal(size=(3, 40, 40)).astype(np.float32)
    ext, scr = tmp_path / "ext", tmp_path / "scr"
    for folder in (ext, scr):
        folder.mkdir()
        write_mrc(folder / "squares.mrcs", stack, 1000.0, stack=True)
    (ext / "squares.csv").write_text("square_id,x_px,y_px\n3,0,0\n5,1,1\n7,2,2\n")
    # screen's scores.csv: the squares.csv columns plus predictions and ranks
    (scr / "scores.csv").write_text(
        "square_id,x_px,y_px,overall,rank\n3,0,0,1.0,3\n5,1,1,2.0,2\n7,2,2,3.0,1\n"
    )
    for folder in (ext, scr):
        res = run_cli("explain", folder, "-o", tmp_path / f"o_{folder.name}", "-m", tmp_path)
        assert res.code == 0, res.err
    a = pd.read_csv(tmp_path / "o_ext" / "scores.csv")
    b = pd.read_csv(tmp_path / "o_scr" / "scores.csv")
    pd.testing.assert_frame_equal(a, b)
    assert len(list((tmp_path / "o_scr").glob("square_*.png"))) == 3

    res = run_cli("explain", tmp_path / "model.pt", "-o", tmp_path / "o3")
    assert res.code == 1 and "no such folder" in res.err


def test_screen_checks_its_input_before_loading_torch(tmp_path):
    code = (
        "import sys; from cryoscout.cli.main import main; "
        f"rc = main(['screen', {str(tmp_path / 'nowhere.dm')!r}, '-o', {str(tmp_path / 'o')!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.stdout.split() == ["1", "False"], out.stderr
    assert "nowhere.dm" in out.stderr


def test_pick_train_epoch_line_speaks_class_names_and_estimates_time():
    import pandas as pd

    from cryoscout.cli.pick_train import epoch_line

    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [0.8, 0.7],
            "val_f1": [float("nan"), 0.5],
            "val_f1_4v94": [float("nan"), 0.6],
            "val_f1_4cr2": [float("nan"), 0.4],
            "elapsed_s": [60.0, 120.0],
        }
    )
    line = epoch_line(history, 10, ["4v94", "4cr2"])
    assert line == (
        "epoch 2/10  loss 0.7000  val F1 0.500 (4v94 0.60, 4cr2 0.40)  "
        "2 min 00 s elapsed  ETA 8 min 00 s"
    )
    assert "val F1" not in epoch_line(history.iloc[:1], 10, ["4v94", "4cr2"])
    assert "ETA" not in epoch_line(history.assign(epoch=[9, 10]), 10, ["4v94", "4cr2"])
