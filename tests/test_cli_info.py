"""`cryoscout info` through the real command line."""

from __future__ import annotations

import json

import numpy as np

from cryoscout.io.serialem import write_serialem_montage


def test_info_real_epu_json(run_cli, shared_data):
    res = run_cli("info", shared_data / "epu", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["format"] == "epu"
    assert out["tiles"] == 8 and out["tiles_missing"] == 8  # images are not shipped
    assert out["grid_squares"] == 47
    assert out["pixel_size_A"] is None
    assert out["montage_shape"] == [2841, 3209]


def test_info_real_serialem_text(run_cli, shared_data):
    res = run_cli("info", shared_data / "serialem" / "montage_section.mdoc")
    assert res.code == 0, res.err
    assert "serialem" in res.out and "62 named, 62 missing" in res.out
    assert "656.139 Å" in res.out


def test_info_image_with_pixel_size_override(run_cli, shared_data):
    path = shared_data / "squares" / "leginon_08mar13e_00010gr_00004sq.mrc"
    out = json.loads(run_cli("info", path, "--json").out)
    assert out["format"] == "image" and out["pixel_size_A"] is None and out["grid_squares"] == 0
    out = json.loads(run_cli("info", path, "--json", "--pixel-size", "4500").out)
    assert out["pixel_size_A"] == 4500


def test_info_written_montage_has_no_missing_tiles(run_cli, tmp_path):
    tiles = [np.zeros((8, 8), np.float32)] * 3
    a = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    write_serialem_montage(tmp_path / "m.mrc", tiles, [(0, 0), (6, 0), (12, 0)], 50.0, a)
    out = json.loads(run_cli("info", tmp_path, "--json").out)
    assert out == out | {"format": "serialem", "tiles": 3, "tiles_missing": 0}
    assert out["montage_shape"] == [8, 20]


def test_info_bad_input_is_one_line(run_cli, tmp_path):
    bad = tmp_path / "atlas.mrc"
    bad.write_bytes(b"garbage")
    res = run_cli("info", bad)
    assert res.code == 1
    assert res.err.strip().count("\n") == 0
    assert str(bad) in res.err and "Traceback" not in res.err
    res = run_cli("info", tmp_path / "nothing-here")
    assert res.code == 1 and "no such file" in res.err
