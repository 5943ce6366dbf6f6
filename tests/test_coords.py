"""Coordinate formats: round trips, RELION 5 centring, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.io.coords import read_coords, tomo_name_from_path, write_picks

SHAPE = (40, 50, 60)  # (z, y, x)


@pytest.fixture
def picks():
    return pd.DataFrame(
        {
            "class": [1, 2, 2],
            "x": [1.5, 10.0, 59.0],
            "y": [2.0, 20.25, 0.0],
            "z": [3.0, 30.0, 39.0],
            "score": [0.5, 0.25, 0.125],
        }
    )


@pytest.mark.parametrize(
    "fmt,name",
    [("csv", "p.csv"), ("coords", "p.coords"), ("relion4", "p4.star"), ("relion5", "p5.star")],
)
def test_round_trip(tmp_path, picks, fmt, name):
    sizes = {"voxel_size_A": 13.5, "tilt_series_pixel_size_A": 1.35}
    path = write_picks(tmp_path / name, picks, fmt, shape=SHAPE, **sizes)
    back = read_coords(path, shape=SHAPE, **sizes)
    np.testing.assert_allclose(back[["x", "y", "z"]], picks[["x", "y", "z"]], atol=1e-3)
    assert back["class"].tolist() == picks["class"].tolist()
    if fmt != "coords":
        np.testing.assert_allclose(back["score"], picks["score"], atol=1e-4)


def test_relion5_centring_hand_computed(tmp_path):
    # 60 x 50 x 40 voxels at 10 Å: centre (30, 25, 20); voxel (40, 25, 10) is
    # +100 Å in x, 0 in y, -100 Å in z.
    p = pd.DataFrame({"class": [1], "x": [40.0], "y": [25.0], "z": [10.0]})
    path = write_picks(
        tmp_path / "a.star", p, "relion5", tomo_name="TS_01", voxel_size_A=10.0, shape=SHAPE
    )
    import starfile

    t = starfile.read(path)
    assert t["rlnTomoName"].tolist() == ["TS_01"]
    assert t["rlnCenteredCoordinateXAngst"].tolist() == [100.0]
    assert t["rlnCenteredCoordinateYAngst"].tolist() == [0.0]
    assert t["rlnCenteredCoordinateZAngst"].tolist() == [-100.0]


def test_text_formats(tmp_path):
    (tmp_path / "a.txt").write_text("# x y z\n1 2 3\n4 5 6\n")
    (tmp_path / "b.coords").write_text("2 1 2 3\n3 4 5 6\n")
    a = read_coords(tmp_path / "a.txt")
    b = read_coords(tmp_path / "b.coords")
    assert a["class"].tolist() == [1, 1] and b["class"].tolist() == [2, 3]
    assert a[["x", "y", "z"]].equals(b[["x", "y", "z"]])


def test_star_with_several_tomograms(tmp_path):
    import starfile

    df = pd.DataFrame(
        {
            "rlnTomoName": ["a", "b"],
            "rlnCoordinateX": [1.0, 2.0],
            "rlnCoordinateY": [1.0, 2.0],
            "rlnCoordinateZ": [1.0, 2.0],
        }
    )
    starfile.write({"particles": df}, tmp_path / "s.star")
    with pytest.raises(InputError, match="several tomograms"):
        read_coords(tmp_path / "s.star", binning=1)
    assert read_coords(tmp_path / "s.star", tomo_name="b", binning=1)["x"].tolist() == [2.0]
    # RELION 4 pixels with no way to tell the binning: an error, not a silent guess.
    with pytest.raises(InputError, match="voxel size is unknown"):
        read_coords(tmp_path / "s.star", tomo_name="b")


@pytest.mark.parametrize(
    "name,text,kwargs,message",
    [
        ("a.csv", "u,v,w\n1,2,3\n", {}, "needs columns x, y, z"),
        ("b.csv", "x,y,z\n1,2,300\n", {"shape": SHAPE}, "outside"),
        ("c.csv", "class,x,y,z\n7,1,2,3\n", {"classes": [1, 2]}, "unknown class 7"),
        ("d.txt", "1 2\n", {}, "3 .x y z. or 4"),
        ("e.star", "data_\nloop_\n_rlnFoo #1\n1\n", {}, "no particle coordinates"),
    ],
)
def test_bad_input_names_the_file(tmp_path, name, text, kwargs, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_coords(tmp_path / name, **kwargs)
    assert err.value.path == str(tmp_path / name)


def test_relion5_needs_shape_and_voxel_size(tmp_path, picks):
    with pytest.raises(InputError, match="voxel size and shape"):
        write_picks(tmp_path / "x.star", picks, "relion5")
    assert not (tmp_path / "x.star").exists()


@pytest.mark.parametrize("binning", [1, 4])
def test_relion4_is_in_unbinned_tilt_series_pixels(tmp_path, picks, binning):
    import starfile

    # Tilt series at 2.5 Å/px; the tomogram binned `binning` times has voxels of 2.5*b Å.
    # A particle at voxel (10, 20.25, 30) sits at tilt-series pixel (10b, 20.25b, 30b).
    voxel = 2.5 * binning
    path = write_picks(
        tmp_path / "p.star", picks, "relion4", voxel_size_A=voxel, tilt_series_pixel_size_A=2.5
    )
    t = starfile.read(path)
    np.testing.assert_allclose(t["rlnCoordinateX"], picks["x"] * binning)
    np.testing.assert_allclose(t["rlnCoordinateZ"], picks["z"] * binning)
    back = read_coords(path, voxel_size_A=voxel, tilt_series_pixel_size_A=2.5, shape=SHAPE)
    np.testing.assert_allclose(back[["x", "y", "z"]], picks[["x", "y", "z"]], atol=1e-4)
    # The binning factor itself does the same.
    by_bin = read_coords(path, binning=binning)
    np.testing.assert_allclose(by_bin[["x", "y", "z"]], picks[["x", "y", "z"]], atol=1e-4)


def test_relion4_refuses_to_guess_the_binning(tmp_path, picks):
    # 10 Å voxels are a binned tomogram: writing voxels would land particles 1/b off.
    with pytest.raises(InputError, match="tilt-series pixel size") as err:
        write_picks(tmp_path / "a.star", picks, "relion4", voxel_size_A=10.0)
    assert err.value.path == str(tmp_path / "a.star") and "10 Å" in str(err.value)
    with pytest.raises(InputError, match="unknown"):
        write_picks(tmp_path / "a.star", picks, "relion4")
    assert not (tmp_path / "a.star").exists()
    # An unbinned tomogram (<= 4 Å voxels) needs nothing more.
    write_picks(tmp_path / "b.star", picks, "relion4", voxel_size_A=2.0)
    np.testing.assert_allclose(read_coords(tmp_path / "b.star", voxel_size_A=2.0)["x"], picks["x"])
    with pytest.raises(InputError, match="suggests binning"):
        read_coords(tmp_path / "b.star", voxel_size_A=8.0)


def test_relion4_reads_the_tilt_series_pixel_size_from_its_optics_table(tmp_path):
    import starfile

    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [2.0]})
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01"],
            "rlnCoordinateX": [400.0],
            "rlnCoordinateY": [80.0],
            "rlnCoordinateZ": [120.0],
            "rlnOpticsGroup": [1],
        }
    )
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "r.star")
    # 8 Å voxels over 2 Å pixels: binning 4.
    back = read_coords(tmp_path / "r.star", voxel_size_A=8.0)
    assert back[["x", "y", "z"]].to_numpy().tolist() == [[100.0, 20.0, 30.0]]


def test_csv_keeps_class_names(tmp_path, picks):
    named = picks.assign(name=["4v94", "1u6g", "1u6g"])
    back = read_coords(write_picks(tmp_path / "n.csv", named))
    assert back["name"].tolist() == ["4v94", "1u6g", "1u6g"]


@pytest.mark.parametrize(
    "path,expected",
    [
        ("tomograms/rec_TS_01.mrc", "TS_01"),  # RELION 5 reconstruction
        ("TS_01_rec.mrc", "TS_01"),  # IMOD
        ("TS_01.rec", "TS_01"),
        ("TS_07_bin4_denoised.mrc", "TS_07"),
        ("TS_03.mrc_10.00Apx.mrc", "TS_03"),  # Warp
        ("TS_05_10.00Apx.mrc", "TS_05"),
        ("Position_12-cryocare.mrc", "Position_12"),
        ("TS_12/tomogram.mrc", "TS_12"),  # generic stem: the folder
        ("run3/TS_4/rec.mrc", "TS_4"),
        ("tomo_01.mrc", "tomo_01"),  # names that only look generic stay
    ],
)
def test_tomo_name_from_path(path, expected):
    assert tomo_name_from_path(path) == expected
