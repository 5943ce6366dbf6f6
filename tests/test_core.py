"""The conventions every command shares: errors, atomic writes, MRC I/O, run records."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cryoscout.errors import InputError
from cryoscout.io.atomic import atomic_path
from cryoscout.io.mrc import read_mrc, write_mrc
from cryoscout.runinfo import write_run_config


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.suffix == ".csv"
        tmp.write_text("a,b\n")
    assert target.read_text() == "a,b\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]


def test_mrc_round_trip_keeps_pixel_size(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 8, 10)).astype(np.float32)
    path = write_mrc(tmp_path / "s.mrcs", data, pixel_size_A=5.5, stack=True)
    back, apix = read_mrc(path)
    np.testing.assert_array_equal(back, data)
    assert apix == pytest.approx(5.5)


def test_mrc_unknown_pixel_size_reads_as_none(tmp_path):
    path = write_mrc(tmp_path / "a.mrc", np.zeros((4, 4), np.float32), pixel_size_A=1.0)
    assert read_mrc(path)[1] is None


def test_truncated_mrc_is_an_input_error(tmp_path):
    good = write_mrc(tmp_path / "a.mrc", np.ones((64, 64), np.float32), pixel_size_A=2.0)
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"bad\.mrc"):
        read_mrc(bad)
    text = tmp_path / "text.mrc"
    text.write_text("not an mrc at all\n" * 100)
    with pytest.raises(InputError, match=r"text\.mrc"):
        read_mrc(text)


def test_run_config_records_version_and_command(tmp_path):
    path = write_run_config(tmp_path, {"seed": 3, "data": [tmp_path]})
    record = yaml.safe_load(path.read_text())
    assert record["config"] == {"seed": 3, "data": [str(tmp_path)]}
    assert record["cryoscout_version"]
    assert "command" in record


def test_cli_usage_error_is_one_line(run_cli):
    result = run_cli("extract", "--no-such-flag")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "--no-such-flag" in result.err


def test_run_record_names_the_cli_arguments_not_the_host_process(tmp_path, run_cli):
    out = tmp_path / "atlas"
    result = run_cli("simulate", "atlas", out, "--seed", "4", "--tiles", "1", "--tile-size", "256")
    assert result.code == 0, result.err
    record = yaml.safe_load((out / "simulation.yaml").read_text())
    assert record["command"].startswith("cryoscout simulate atlas ")
    assert "--seed 4" in record["command"]
