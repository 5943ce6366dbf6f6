"""Coordinate formats: round trips, RELION 5 centring, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.io.coords import read_coords, write_picks

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
    path = write_picks(tmp_path / name, picks, fmt, voxel_size_A=13.5, shape=SHAPE)
    back = read_coords(path, voxel_size_A=13.5, shape=SHAPE)
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
        read_coords(tmp_path / "s.star")
    assert read_coords(tmp_path / "s.star", tomo_name="b")["x"].tolist() == [2.0]


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
