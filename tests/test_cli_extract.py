"""`cryoscout extract` end to end: the files it writes, what they hold, and bad input."""

from __future__ import annotations

import shutil

import mrcfile
import numpy as np
import pandas as pd
import pytest
import yaml

from cryoscout.io.squares import SCORE_COLUMNS, read_extraction


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small simulated atlas written as one MRC (with truth.csv) and as EPU."""
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas, write_simulated_atlas

    cfg = AtlasConfig(
        mesh=400, pixel_size_nm=600.0, rotation_deg=52.0, tiles_x=2, tiles_y=2, tile_size=512
    )
    sim = simulate_atlas(cfg, seed=11)
    root = tmp_path_factory.mktemp("sim")
    mrc = write_simulated_atlas(sim, root / "mrc", "mrc")
    epu = write_simulated_atlas(sim, root / "epu", "epu")
    return sim, mrc, epu


@pytest.fixture(scope="module")
def extracted(simulated, tmp_path_factory):
    """One extraction folder of the MRC atlas, shared by the tests that only read it."""
    from cryoscout.cli.main import main

    out = tmp_path_factory.mktemp("extracted") / "out"
    assert main(["extract", str(simulated[1]), "-o", str(out), "--size", "32"]) == 0
    return out


def test_extract_writes_every_file(run_cli, simulated, tmp_path):
    sim, mrc, _ = simulated
    out = tmp_path / "out"
    res = run_cli("extract", mrc, "-o", out, "--size", "48")
    assert res.code == 0, res.err
    for name in ("squares.csv", "squares.mrcs", "overview.png", "config.yaml", "labels.csv"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if "partial" in p.name]  # no temporary leftovers
    table = pd.read_csv(out / "squares.csv")
    n_full = int(table["full"].sum())
    assert f"{len(table)} squares ({n_full} full, {len(table) - n_full} partial)" in res.out
    assert str(out) in res.out
    with mrcfile.open(out / "squares.mrcs") as m:
        assert m.data.shape == (len(table), 48, 48)
        assert m.data.dtype == np.float32
        assert m.is_image_stack()
        config = yaml.safe_load((out / "config.yaml").read_text())
        pitch = config["config"]["lattice"]["pitch_px"]
        assert float(m.voxel_size.x) == pytest.approx(sim.pixel_size_A * pitch / 48, rel=1e-4)
    assert config["config"]["input"].endswith("atlas.mrc")
    # labels.csv: square_id + the five truth scores, only for squares matched to the truth.
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["square_id", *SCORE_COLUMNS]
    assert set(labels["square_id"]) <= set(table["square_id"])
    assert len(labels) >= 0.9 * len(table)
    assert labels[list(SCORE_COLUMNS)].isin([0, 1, 2, 3, 4]).all().all()
    data = read_extraction(out)
    assert data.stack.shape[0] == len(data.table) and data.labels is not None


def test_labels_are_the_truth_of_the_nearest_square(simulated, extracted):
    sim, out = simulated[0], extracted
    table = pd.read_csv(out / "squares.csv").set_index("square_id")
    labels = pd.read_csv(out / "labels.csv")
    truth = sim.truth
    for _, row in labels.head(10).iterrows():
        x, y = table.loc[row["square_id"], ["x_px", "y_px"]]
        k = int(np.argmin(np.hypot(truth["x_px"] - x, truth["y_px"] - y)))
        assert row["overall"] == truth["overall"].iloc[k]


def test_epu_input_gets_epu_square_ids(run_cli, simulated, tmp_path):
    _, _, epu = simulated
    out = tmp_path / "epu_out"
    res = run_cli("extract", epu, "-o", out, "--size", "32")
    assert res.code == 0, res.err
    table = pd.read_csv(out / "squares.csv", dtype={"epu_square_id": str})
    assert "epu_square_id" in table.columns
    assert table["epu_square_id"].notna().mean() > 0.8


def test_user_labels_with_a_subset_of_scores(extracted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(extracted, out)
    pd.DataFrame({"square_id": [1, 2], "cracking": [3, 0]}).to_csv(out / "labels.csv", index=False)
    data = read_extraction(out)
    assert list(data.labels.columns) == ["square_id", "cracking"]


def test_image_without_a_grid_is_one_line_error(run_cli, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(path)
    res = run_cli("extract", path, "-o", tmp_path / "out")
    assert res.code == 1
    lines = res.err.strip().splitlines()
    assert len(lines) == 1
    assert "noise.png" in lines[0] and "no grid lattice found" in lines[0]
    assert "Traceback" not in res.err
    assert not (tmp_path / "out" / "squares.csv").exists()


def test_bad_option_values(run_cli, simulated, tmp_path):
    _, mrc, _ = simulated
    res = run_cli("extract", mrc, "-o", tmp_path / "o", "--size", "2")
    assert res.code != 0 and "--size" in res.err
    res = run_cli("extract", tmp_path / "missing.mrc", "-o", tmp_path / "o")
    assert res.code != 0 and "missing.mrc" in res.err


def test_read_extraction_rejects_mismatched_files(extracted, tmp_path):
    from cryoscout.errors import InputError

    out = tmp_path / "out"
    shutil.copytree(extracted, out)
    table = pd.read_csv(out / "squares.csv")
    table.iloc[:-1].to_csv(out / "squares.csv", index=False)
    with pytest.raises(InputError, match=r"squares\.csv lists"):
        read_extraction(out)


def test_real_epu_atlas_with_missing_tiles_is_one_line_error(run_cli, shared_data, tmp_path):
    # The trimmed real Atlas.dm names tiles whose images are not shipped.
    res = run_cli("extract", shared_data / "epu" / "Atlas.dm", "-o", tmp_path / "out")
    assert res.code == 1
    assert len(res.err.strip().splitlines()) == 1 and "missing" in res.err
    assert not (tmp_path / "out" / "squares.csv").exists()


def test_real_single_square_image_is_not_an_atlas(run_cli, shared_data, tmp_path):
    # A medium-magnification image of one square (holes, no bars) holds no grid lattice.
    path = shared_data / "squares" / "leginon_08mar13e_00010gr_00004sq.mrc"
    res = run_cli("extract", path, "-o", tmp_path / "out")
    assert res.code == 1 and "no grid lattice found" in res.err and path.name in res.err


def test_overview_coloured_by_a_score(extracted, tmp_path):
    from PIL import Image

    from cryoscout.report.overview import render_overview

    data = read_extraction(extracted)
    image = np.random.default_rng(0).random((3000, 2500)).astype(np.float32)
    out = render_overview(image, data.table, tmp_path / "o.png", color_by="brightness")
    with Image.open(out) as im:
        assert im.format == "PNG" and max(im.size) <= 2200 and min(im.size) > 500
