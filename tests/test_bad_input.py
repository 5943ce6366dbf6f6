"""The bad-input corpus: one test per class of malformed input (issue 8).

Every input is built here from the writers the simulators use (EPU, SerialEM, MRC,
coordinates) or from the real files in ../shared/data, then broken in one way. Each
must give exactly one line on stderr naming the file and the problem, and exit 1.
"""

from __future__ import annotations

import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.io.atlas_reader import load_tile, open_atlas
from cryoscout.io.coords import check_classes, read_coords
from cryoscout.io.epu import write_epu_atlas
from cryoscout.io.mrc import read_mrc, write_mrc
from cryoscout.io.serialem import write_serialem_montage
from cryoscout.io.validate import check_memory, safe_filename

PX_TO_STAGE = np.array([[0.05, 0.0, -3.0], [0.0, 0.05, -3.0]])


def one_line(result, *fragments: str) -> str:
    """Assert a one-line error on stderr holding every fragment; return the line."""
    assert result.code == 1, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("cryoscout: error: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def epu_atlas(tmp_path) -> Path:
    """A 2 x 2 EPU atlas of 64 px tiles with two grid squares, written as EPU lays it out."""
    rng = np.random.default_rng(0)
    tiles = [rng.normal(100, 10, (64, 64)).astype(np.float32) for _ in range(4)]
    squares = pd.DataFrame(
        {"square_id": [1, 2], "x_px": [30.0, 90.0], "y_px": [30.0, 90.0], "size_px": [20.0] * 2}
    )
    positions = [(0, 0), (60, 0), (0, 60), (60, 60)]
    return write_epu_atlas(tmp_path / "epu", tiles, positions, 500.0, PX_TO_STAGE, squares)


def _edit(path: Path, pattern: str, repl: str, count: int = 1) -> Path:
    text = path.read_text()
    new, n = re.subn(pattern, repl, text, count=count)
    assert n, f"{pattern!r} not in {path}"
    path.write_text(new)
    return path


@pytest.fixture
def serialem(tmp_path) -> Path:
    """A 2 x 2 SerialEM montage of 48 px pieces (stack + .mdoc)."""
    rng = np.random.default_rng(1)
    tiles = [rng.normal(100, 10, (48, 48)).astype(np.float32) for _ in range(4)]
    positions = [(0, 0), (44, 0), (0, 44), (44, 44)]
    return write_serialem_montage(tmp_path / "lmm.mrc", tiles, positions, 600.0, PX_TO_STAGE)


# --------------------------------------------------------------------------- EPU numbers


@pytest.mark.parametrize(
    ("pattern", "repl", "field"),
    [
        (r"<b:x>60</b:x>", "<b:x>NaN</b:x>", "AtlasPixelPosition/x"),
        (r"<b:x>60</b:x>", "<b:x>1e300</b:x>", "AtlasPixelPosition/x"),
        (r"<b:y>60</b:y>", "<b:y>INF</b:y>", "AtlasPixelPosition/y"),
        (r"<b:width>64</b:width>", "<b:width>-64</b:width>", "AtlasPixelPosition/width"),
        (r"<b:height>64</b:height>", "<b:height>0</b:height>", "AtlasPixelPosition/height"),
        (r"<b:height>64</b:height>", "<b:height>1e300</b:height>", "AtlasPixelPosition/height"),
        (r"<b:x>30.0</b:x>", "<b:x>NaN</b:x>", "Center/x"),
        (r"<b:y>90.0</b:y>", "<b:y>-INF</b:y>", "Center/y"),
        (r"<c:X>-1.425e-06</c:X>", "<c:X>1e300</c:X>", "StagePosition/X"),
    ],
)
def test_epu_numbers_out_of_range_name_the_file_and_field(epu_atlas, run_cli, pattern, repl, field):
    _edit(epu_atlas, pattern, repl)
    line = one_line(run_cli("info", epu_atlas), "Atlas.dm", field)
    assert "Traceback" not in line


def test_epu_tile_pixel_size_nan_in_its_xml(epu_atlas, run_cli):
    xml = sorted(epu_atlas.parent.glob("Tile_*.xml"))[0]
    _edit(xml, r"<numericValue>5e-08</numericValue>", "<numericValue>NaN</numericValue>")
    one_line(run_cli("info", epu_atlas), xml.name, "pixel size")


def test_epu_tiles_disagreeing_on_pixel_size(epu_atlas, run_cli):
    xml = sorted(epu_atlas.parent.glob("Tile_*.xml"))[2]
    _edit(xml, r"<numericValue>5e-08</numericValue>", "<numericValue>7e-08</numericValue>")
    one_line(run_cli("info", epu_atlas), xml.name, "differs")


@pytest.mark.parametrize("x", ["-5000", "30000"])
def test_epu_tile_at_a_far_off_position_is_not_silently_dropped(epu_atlas, run_cli, x):
    _edit(epu_atlas, r"<b:x>60</b:x>", f"<b:x>{x}</b:x>")
    one_line(run_cli("info", epu_atlas), "Atlas.dm", "tile 1")


def test_epu_tile_whose_pixels_do_not_match_its_box(epu_atlas, run_cli):
    tile = sorted(epu_atlas.parent.glob("Tile_*.mrc"))[1]
    write_mrc(tile, np.zeros((32, 64), np.float32), 500.0)  # 2:1, the atlas box is 1:1
    one_line(run_cli("info", epu_atlas), tile.name, "aspect ratio")


def test_epu_tile_path_that_is_a_folder(epu_atlas, run_cli, tmp_path):
    tile = sorted(epu_atlas.parent.glob("Tile_*.mrc"))[0]
    tile.unlink()
    tile.mkdir()
    one_line(run_cli("extract", epu_atlas, "-o", tmp_path / "out"), tile.name, "folder")
    assert not (tmp_path / "out").exists()


def test_real_epu_atlas_still_reads(shared_data):
    source = open_atlas(shared_data / "epu" / "Atlas.dm")
    assert (len(source.tiles), len(source.known_squares)) == (8, 47)
    assert 0 < source.montage_shape[0] < 20_000


# --------------------------------------------------------------------------- MRC headers


def test_random_bytes_named_mrc(tmp_path, run_cli):
    bad = tmp_path / "atlas.mrc"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    one_line(run_cli("info", bad), "atlas.mrc")


def test_header_claiming_more_than_the_file_holds(tmp_path, run_cli):
    path = tmp_path / "huge.mrc"
    write_mrc(path, np.zeros((32, 32), np.float32), 5000.0)
    with mrcfile.open(path, mode="r+", permissive=True) as mrc:
        mrc.header.nx = mrc.header.ny = 100_000
    with open(path, "ab") as f:  # a 1 MB file
        f.write(bytes(1_000_000))
    line = one_line(run_cli("info", path), "huge.mrc", "truncated")
    assert "100000x100000" in line


def test_complex_mrc(tmp_path, run_cli):
    path = tmp_path / "fft.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((32, 32), np.complex64))
    one_line(run_cli("extract", path, "-o", tmp_path / "out"), "fft.mrc", "complex")


def test_truncated_stack(serialem, run_cli):
    size = serialem.stat().st_size
    with open(serialem, "r+b") as f:
        f.truncate(size - 48 * 48 * 4 - 100)
    one_line(run_cli("info", serialem), serialem.name, "truncated")


def test_mostly_non_finite_tile_is_refused_naming_it(serialem):
    with mrcfile.open(serialem, mode="r+") as mrc:
        mrc.data[2, :, :30] = np.nan
    source = open_atlas(serialem)
    with pytest.raises(InputError, match=r"section 2: .*NaN or infinite") as err:
        load_tile(source, source.tiles[2])
    assert err.value.path == str(serialem)


def test_a_few_saturated_pixels_become_no_data(serialem):
    with mrcfile.open(serialem, mode="r+") as mrc:
        mrc.data[1, 0, :3] = np.inf
    source = open_atlas(serialem)
    tile = load_tile(source, source.tiles[1])
    assert np.isnan(tile[0, :3]).all() and np.isfinite(tile[1:]).all()


def test_read_mrc_nan_cell_is_an_input_error(tmp_path):
    path = tmp_path / "nan.mrc"
    write_mrc(path, np.zeros((8, 8), np.float32), 5.0)
    with mrcfile.open(path, mode="r+", permissive=True) as mrc:
        mrc.header.cella.x = np.nan
    with pytest.raises(InputError, match="cell dimension x"):
        read_mrc(path)


# --------------------------------------------------------------------------- SerialEM


def test_mdoc_listing_fewer_pieces_than_the_stack(serialem, run_cli):
    mdoc = serialem.with_name(serialem.name + ".mdoc")
    text = mdoc.read_text()
    mdoc.write_text(text[: text.index("[ZValue = 3]")] + text[text.index("[MontSection") :])
    one_line(run_cli("info", serialem), mdoc.name, "3 pieces", "4 sections")


@pytest.mark.parametrize(
    ("pattern", "repl", "field"),
    [
        (r"PieceCoordinates = 44 0 0", "PieceCoordinates = 44", "PieceCoordinates"),
        (r"PieceCoordinates = 44 0 0", "PieceCoordinates = nan 0 0", "PieceCoordinates"),
        (r"StagePosition = \S+ \S+\n", "StagePosition = 1\n", "StagePosition"),
        (r"StagePosition = \S+ \S+\n", "StagePosition = inf 2\n", "StagePosition"),
        (r"PixelSpacing = 600", "PixelSpacing = -600", "PixelSpacing"),
        (r"PixelSpacing = 600", "PixelSpacing = 1e30", "PixelSpacing"),
    ],
)
def test_mdoc_values_checked(serialem, run_cli, pattern, repl, field):
    mdoc = serialem.with_name(serialem.name + ".mdoc")
    _edit(mdoc, pattern, repl, count=0)
    one_line(run_cli("info", mdoc), mdoc.name, field)


def test_mdoc_without_stack_and_bad_image_size(serialem, run_cli):
    mdoc = serialem.with_name(serialem.name + ".mdoc")
    serialem.unlink()
    _edit(mdoc, r"ImageSize = 48 48", "ImageSize = 48")
    one_line(run_cli("info", mdoc), mdoc.name, "ImageSize")


def test_real_mdoc_still_reads(shared_data):
    source = open_atlas(shared_data / "serialem" / "montage_section.mdoc")
    assert len(source.tiles) == 62 and source.pixel_size_A == pytest.approx(656.139)


# --------------------------------------------------------------------------- memory


def test_simulated_atlas_too_big_for_memory(tmp_path, run_cli):
    line = one_line(run_cli("simulate", "atlas", tmp_path / "big", "--tiles", "100000x100000"))
    assert "--tiles" in line and "memory" in line
    assert not (tmp_path / "big").exists()


def test_simulated_tomogram_too_big_for_memory(tmp_path, run_cli):
    result = run_cli(
        "simulate", "tomogram", tmp_path / "t", "--seed", "1", "--shape", "20000,20000,2000"
    )
    one_line(result, "--shape", "memory")


def test_check_memory_compares_with_what_the_machine_has(monkeypatch):
    import cryoscout.io.validate as v

    monkeypatch.setattr(v, "available_memory", lambda: 1024**3)
    check_memory("x", "a small thing", 1024**2)
    with pytest.raises(InputError, match=r"about 2\.0 GiB .* has 1\.0 GiB"):
        check_memory("x", "a montage", 2 * 1024**3)


# --------------------------------------------------------------------------- coordinates


def test_coordinates_mixing_3_and_4_columns(tmp_path):
    path = tmp_path / "picks.txt"
    path.write_text("10 20 30\n2 10 20 30\n")
    with pytest.raises(InputError, match="mix 3 and 4 columns"):
        read_coords(path)


def test_class_beyond_the_declared_classes(tmp_path):
    tables = [pd.DataFrame({"class": [1, 2, 99], "x": 1.0, "y": 1.0, "z": 1.0})]
    with pytest.raises(InputError, match="class 99 is not among the 2 declared"):
        check_classes(tables, [tmp_path / "a.csv"], n_classes=2)
    with pytest.raises(InputError, match="class 99 is used but class 3 is not") as err:
        check_classes(tables, [tmp_path / "a.csv"])
    assert err.value.path == str(tmp_path / "a.csv")
    ok = [pd.DataFrame({"class": [2, 1], "x": 1.0, "y": 1.0, "z": 1.0})]
    assert check_classes(ok, ["b.csv"]) == 2


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [("/../../../X", "X"), ("a/b", "a_b"), ("..", "unnamed"), ("sq 1\n", "sq_1"), ("7", "7")],
)
def test_safe_filename_never_leaves_the_folder(name, expected):
    assert safe_filename(name) == expected
    assert "/" not in safe_filename(name) and not safe_filename(name).startswith(".")


# --------------------------------------------------------------------------- one line always


def test_warnings_are_not_shown_on_an_error_path(epu_atlas, run_cli, monkeypatch):
    import warnings

    import cryoscout.io.atlas_reader as reader

    def noisy(path, pixel_size_A=None):
        warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=1)
        raise InputError(path, "a problem the user can fix")

    monkeypatch.setattr(reader, "open_atlas", noisy)
    line = one_line(run_cli("info", epu_atlas), "a problem the user can fix")
    assert "invalid value" not in line


def test_warnings_of_a_successful_command_go_to_the_log(epu_atlas, run_cli, monkeypatch, caplog):
    import logging
    import warnings

    import cryoscout.io.atlas_reader as reader

    real = reader.open_atlas

    def noisy(path, pixel_size_A=None):
        warnings.warn("a library's advice", UserWarning, stacklevel=1)
        return real(path, pixel_size_A)

    monkeypatch.setattr(reader, "open_atlas", noisy)
    with caplog.at_level(logging.INFO, logger="cryoscout.warnings"):
        res = run_cli("info", epu_atlas)
    assert res.code == 0 and "advice" not in res.err
    assert any("a library's advice" in r.getMessage() for r in caplog.records)


def test_unexpected_exception_names_the_input_and_the_stage(epu_atlas, run_cli, monkeypatch):
    import cryoscout.atlas.stitch as stitch

    def broken(source, flat_field=True):
        raise ValueError("operands could not be broadcast\nsecond line of numpy's text")

    monkeypatch.setattr(stitch, "stitch", broken)
    line = one_line(run_cli("extract", epu_atlas, "-o", epu_atlas.parent / "out"))
    assert f"{epu_atlas}: stitching failed: ValueError: operands could not" in line
    assert "second line" not in line and "--debug" in line


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
@pytest.mark.parametrize("command", ["info", "extract", "screen"])
def test_pixel_size_must_be_finite_in_every_command(epu_atlas, run_cli, command, value):
    args = [command, epu_atlas, "--pixel-size", value]
    if command != "info":
        args += ["-o", epu_atlas.parent / "out"]
    res = run_cli(*args)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1
    assert "--pixel-size" in res.err  # "finite", or ">= 0" where the option has a minimum


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "atlas", "OUT", "--seed", "-1"],
        ["simulate", "tomogram", "OUT", "--seed", "-5"],
        ["train", "EXT", "-o", "OUT", "--seed", "-1"],
        ["pick", "train", "t.mrc", "t.csv", "-o", "OUT", "--radius", "2", "--seed", "-2"],
    ],
)
def test_negative_seeds_are_refused_at_the_command_line(tmp_path, run_cli, args):
    args = [str(tmp_path / a) if a in ("OUT", "EXT") else a for a in args]
    res = run_cli(*args)
    assert res.code == 2 and "--seed" in res.err and len(res.err.strip().splitlines()) == 1
