"""The app's tomogram workspace (docs/app-api-tomograms.md) through its HTTP API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from PIL import Image

from cryoscout.app.server import create_app
from cryoscout.io.mrc import write_mrc

SHAPE = (20, 36, 52)  # (z, y, x): every axis different, so a transposed view shows
VOXEL_A = 10.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tomo_data")
    rng = np.random.default_rng(3)
    # Distinct values everywhere (a ramp plus noise), so any wrong section shows.
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    vol = (0.5 * x + 2.0 * y + 5.0 * z + rng.normal(0, 1.0, SHAPE)).astype(np.float32)
    write_mrc(root / "rec_TS_01.mrc", vol, VOXEL_A)
    # A spherical template: radius 6 voxels of 5 Å -> 30 Å.
    g = np.arange(24) - 11.5
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    write_mrc(root / "sphere.mrc", (r <= 6.0).astype(np.float32), 5.0)
    (root / "broken.mrc").write_bytes(b"not an mrc file at all" * 50)
    return root


@pytest.fixture(scope="module")
def volume(data_dir) -> np.ndarray:
    from cryoscout.io.mrc import read_mrc

    return read_mrc(data_dir / "rec_TS_01.mrc")[0]


def make_client(project: Path, data_dir: Path) -> TestClient:
    return TestClient(create_app(project, data_roots=[data_dir], run_jobs=False))


@pytest.fixture(scope="module")
def client(tmp_path_factory, data_dir):
    project = tmp_path_factory.mktemp("tomo_project")
    with make_client(project, data_dir) as c:
        r = c.post("/api/tomograms", json={"path": str(data_dir / "rec_TS_01.mrc")})
        assert r.status_code == 201, r.text
        for name, radius in (("ribosome", 120.0), ("proteasome", 60.0)):
            r = c.post("/api/particle-classes", json={"name": name, "radius_A": radius})
            assert r.status_code == 201, r.text
        c.project_dir = project
        yield c


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(response.content)))
    assert img.dtype == np.uint8 and img.ndim == 2
    h, w = (int(v) for v in response.headers["x-slice-shape"].split(","))
    assert img.shape == (h, w)
    return img


def stretch(img: np.ndarray, vol: np.ndarray, lo: float, hi: float) -> np.ndarray:
    vlo, vhi = np.percentile(vol, [lo, hi])
    return np.clip((img - vlo) * 255.0 / (vhi - vlo) + 0.5, 0, 255).astype(np.uint8)


def test_a_tomogram_is_added_once_with_its_shape_and_voxel_size(client, data_dir):
    (row,) = client.get("/api/tomograms").json()
    assert row["name"] == "TS_01"  # RELION's tilt-series name of rec_TS_01.mrc
    assert row["shape"] == {"x": 52, "y": 36, "z": 20}
    assert row["voxel_size_A"] == pytest.approx(VOXEL_A)
    assert row["source"] == "mrc" and row["copick"] is None
    assert client.get(f"/api/tomograms/{row['id']}").json()["path"] == row["path"]
    again = client.post("/api/tomograms", json={"path": str(data_dir / "rec_TS_01.mrc")})
    assert again.status_code == 409
    assert client.get("/api/tomograms/99").status_code == 404


def test_bad_tomogram_paths_are_400_naming_the_file(client, data_dir, tmp_path):
    broken = client.post("/api/tomograms", json={"path": str(data_dir / "broken.mrc")})
    assert broken.status_code == 400 and "broken.mrc" in broken.json()["detail"]
    missing = client.post("/api/tomograms", json={"path": str(data_dir / "nope.mrc")})
    assert missing.status_code == 400 and "nope.mrc" in missing.json()["detail"]
    outside = tmp_path / "elsewhere.mrc"
    write_mrc(outside, np.zeros((4, 4, 4), np.float32), 10.0)
    refused = client.post("/api/tomograms", json={"path": str(outside)})
    assert refused.status_code == 400 and "outside the folders" in refused.json()["detail"]


@pytest.mark.parametrize("axis", ["z", "y", "x"])
def test_slices_are_the_sections_of_the_array_along_each_axis(client, volume, axis):
    index = 7
    img = png(client.get(f"/api/tomograms/1/slice.png?axis={axis}&index={index}&lo=0&hi=100"))
    # z: rows = y, columns = x; y: rows = z, columns = x; x: rows = z, columns = y.
    expected = {"z": volume[index], "y": volume[:, index, :], "x": volume[:, :, index]}[axis]
    assert img.shape == expected.shape
    np.testing.assert_array_equal(img, stretch(expected, volume, 0, 100))


@pytest.mark.parametrize("axis", ["z", "x"])
def test_binned_slices_average_bin_sections_and_pixels(client, volume, axis):
    index, b = 9, 2  # block [8, 10)
    img = png(client.get(f"/api/tomograms/1/slice.png?axis={axis}&index={index}&bin={b}"))
    block = volume[8:10].mean(0) if axis == "z" else volume[:, :, 8:10].mean(2)
    h, w = block.shape[0] // b, block.shape[1] // b
    binned = block[: h * b, : w * b].reshape(h, b, w, b).mean((1, 3))
    assert img.shape == (h, w)
    # Percentiles of the binned views (the same processing applied to the whole volume).
    views = np.stack([volume[i : i + 2].mean(0) for i in range(0, SHAPE[0], 2)])
    pooled = views[:, : 18 * 2, : 26 * 2].reshape(-1, 18, 2, 26, 2).mean((2, 4))
    np.testing.assert_allclose(img, stretch(binned, pooled, 1, 99), atol=1)


def test_contrast_follows_the_percentiles_of_the_whole_tomogram(client, volume):
    plain = png(client.get("/api/tomograms/1/slice.png?index=10&lo=1&hi=99"))
    np.testing.assert_array_equal(plain, stretch(volume[10], volume, 1, 99))
    wide = png(client.get("/api/tomograms/1/slice.png?index=10&lo=0&hi=100"))
    assert wide.std() < plain.std()  # a wider window flattens the image
    smooth = png(client.get("/api/tomograms/1/slice.png?index=10&lowpass=2"))
    # Low-pass removes the noise: neighbouring pixels differ less than in the raw slice.
    assert (
        np.abs(np.diff(smooth.astype(float), axis=1)).mean()
        < np.abs(np.diff(plain.astype(float), axis=1)).mean()
    )


@pytest.mark.parametrize(
    "query",
    ["index=20", "index=-1", "axis=x&index=52", "axis=q", "bin=3", "lo=90&hi=10", "lowpass=-1"],
)
def test_bad_slice_requests_are_refused(client, query):
    r = client.get(f"/api/tomograms/1/slice.png?{query}")
    assert r.status_code in (400, 422), r.text
    if "index" in query:
        assert r.status_code == 400 and "outside" in r.json()["detail"]


def test_particle_classes_validate_and_estimate_radius_from_a_template(client, data_dir):
    classes = {c["name"]: c for c in client.get("/api/particle-classes").json()}
    assert (
        classes["ribosome"]["radius_A"] == 120.0
        and classes["ribosome"]["colour"] != (classes["proteasome"]["colour"])
    )
    r = client.post(
        "/api/particle-classes", json={"name": "apo", "template": str(data_dir / "sphere.mrc")}
    )
    assert r.status_code == 201, r.text
    assert r.json()["radius_A"] == pytest.approx(30.0, rel=0.1)  # 6 voxels of 5 Å
    assert (
        client.post("/api/particle-classes", json={"name": "apo", "radius_A": 5}).status_code == 409
    )
    for bad in (
        {"name": "bad name", "radius_A": 5},
        {"name": "noradius"},
        {"name": "x/y", "radius_vox": 2},
    ):
        assert client.post("/api/particle-classes", json=bad).status_code in (400, 422), bad
    patched = client.patch(f"/api/particle-classes/{r.json()['id']}", json={"radius_vox": 4.0})
    assert patched.json()["radius_vox"] == 4.0 and patched.json()["name"] == "apo"
    assert client.delete(f"/api/particle-classes/{r.json()['id']}").json() == {
        "deleted": r.json()["id"]
    }


def test_annotations_add_move_delete_and_undo_in_order(client, data_dir):
    base = "/api/tomograms/1/annotations"
    a = client.post(base, json={"class": "ribosome", "x": 10, "y": 5.5, "z": 3, "labeler": "ann"})
    assert a.status_code == 201, a.text
    b = client.post(base, json={"class": "proteasome", "x": 40, "y": 30, "z": 19, "labeler": "ann"})
    a, b = a.json(), b.json()
    assert (a["x"], a["y"], a["z"], a["class"], a["source"]) == (10, 5.5, 3, "ribosome", "click")
    moved = client.patch(
        f"/api/annotations/{a['id']}", json={"x": 12, "class": "proteasome", "labeler": "ann"}
    )
    assert (
        moved.json()["x"] == 12
        and moved.json()["class"] == "proteasome"
        and moved.json()["y"] == 5.5
    )
    assert client.delete(f"/api/annotations/{b['id']}?labeler=ann").json() == {"deleted": b["id"]}
    # A colleague's work is not undone by "ann".
    other = client.post(
        base, json={"class": "ribosome", "x": 1, "y": 1, "z": 1, "labeler": "bob"}
    ).json()
    assert {x["id"] for x in client.get(base).json()} == {a["id"], other["id"]}

    undo = client.post("/api/annotations/undo", json={"labeler": "ann"}).json()  # the delete
    assert undo["undone"]["action"] == "delete" and undo["annotation"]["id"] == b["id"]
    assert undo["annotation"]["z"] == 19 and undo["annotation"]["class"] == "proteasome"
    undo = client.post("/api/annotations/undo", json={"labeler": "ann"}).json()  # the move
    assert undo["undone"]["action"] == "move"
    assert (undo["annotation"]["x"], undo["annotation"]["class"]) == (10, "ribosome")
    undo = client.post("/api/annotations/undo", json={"labeler": "ann"}).json()  # add of b
    assert undo["undone"]["annotation_id"] == b["id"] and undo["annotation"] is None
    undo = client.post("/api/annotations/undo", json={"labeler": "ann"}).json()  # add of a
    assert undo["undone"]["annotation_id"] == a["id"]
    assert client.post("/api/annotations/undo", json={"labeler": "ann"}).status_code == 409
    assert [x["id"] for x in client.get(base).json()] == [other["id"]]
    # A new annotation never reuses an id the log has seen.
    new = client.post(base, json={"class": "ribosome", "x": 2, "y": 2, "z": 2, "labeler": "ann"})
    assert new.json()["id"] > max(a["id"], b["id"], other["id"])
    assert client.get("/api/tomograms/1").json()["n_annotations"] == {"ribosome": 2}


@pytest.mark.parametrize(
    "body",
    [
        {"class": "ribosome", "x": 52, "y": 1, "z": 1},  # x beyond 51.5
        {"class": "ribosome", "x": 1, "y": -0.6, "z": 1},
        {"class": "ribosome", "x": 1, "y": 1, "z": 20},
        {"class": "nucleosome", "x": 1, "y": 1, "z": 1},
    ],
)
def test_annotations_outside_the_volume_or_of_unknown_classes_are_400(client, body):
    r = client.post("/api/tomograms/1/annotations", json=body)
    assert r.status_code == 400, r.text


def test_annotations_survive_a_new_app_on_the_same_project(client, data_dir):
    before = client.get("/api/tomograms/1/annotations").json()
    assert before
    with make_client(client.project_dir, data_dir) as fresh:
        assert fresh.get("/api/tomograms/1/annotations").json() == before
        assert [c["name"] for c in fresh.get("/api/particle-classes").json()][:2] == [
            "ribosome",
            "proteasome",
        ]


def test_a_class_in_use_cannot_be_deleted(client):
    ribo = next(c for c in client.get("/api/particle-classes").json() if c["name"] == "ribosome")
    assert ribo["n_annotations"] > 0
    assert client.delete(f"/api/particle-classes/{ribo['id']}").status_code == 409


def test_coordinates_are_imported_from_a_file(client, data_dir):
    import pandas as pd

    from cryoscout.io.coords import write_picks

    path = write_picks(
        data_dir / "import.csv",
        pd.DataFrame({"class": [1, 1], "x": [3.0, 4.0], "y": [5.0, 6.0], "z": [7.0, 8.0]}),
    )
    n = len(client.get("/api/tomograms/1/annotations").json())
    r = client.post(
        "/api/tomograms/1/annotations/import", json={"path": str(path), "class": "proteasome"}
    )
    assert r.status_code == 201 and r.json() == {"added": 2}
    rows = client.get("/api/tomograms/1/annotations").json()
    assert len(rows) == n + 2 and rows[-1]["source"] == "import" and rows[-1]["x"] == 4.0
    unnamed = client.post("/api/tomograms/1/annotations/import", json={"path": str(path)})
    assert unnamed.status_code == 400 and "import.csv" in unnamed.json()["detail"]


def copick_project(root: Path) -> Path:
    copick = pytest.importorskip("copick")
    config = {
        "name": "tiny", "description": "", "version": "1.0.0", "config_type": "filesystem",
        "overlay_root": f"local://{root / 'overlay'}", "overlay_fs_args": {"auto_mkdir": True},
        "pickable_objects": [
            {"name": "ribosome", "is_particle": True, "label": 1, "radius": 120,
             "color": [0, 255, 0, 255]},
        ],
    }  # fmt: skip
    path = root / "copick.json"
    path.write_text(json.dumps(config))
    project = copick.from_file(str(path))
    rng = np.random.default_rng(2)
    for run_name in ("TS_1", "TS_2"):
        vs = project.new_run(run_name).new_voxel_spacing(VOXEL_A)
        vs.new_tomogram("denoised").from_numpy(rng.normal(size=(12, 24, 28)).astype(np.float32))
    return path


def test_a_copick_project_adds_every_run_and_its_slices_read(tmp_path):
    config = copick_project(tmp_path)
    import zarr

    with make_client(tmp_path / "project", tmp_path) as c:
        r = c.post("/api/tomograms", json={"path": str(config)})
        assert r.status_code == 201, r.text
        rows = r.json()["tomograms"]
        assert [t["name"] for t in rows] == ["TS_1", "TS_2"]
        assert all(
            t["source"] == "copick" and t["shape"] == {"x": 28, "y": 24, "z": 12} for t in rows
        )
        assert rows[0]["copick"]["run"] == "TS_1" and rows[0]["copick"]["tomo_type"] == "denoised"
        assert c.post("/api/tomograms", json={"path": str(config)}).status_code == 409
        store = (tmp_path / "overlay" / "ExperimentRuns" / "TS_2" / "VoxelSpacing10.000"
                 / "denoised.zarr")  # fmt: skip
        vol = np.asarray(zarr.open(str(store), mode="r")["0"])
        img = png(c.get(f"/api/tomograms/{rows[1]['id']}/slice.png?axis=y&index=5&lo=0&hi=100"))
        np.testing.assert_array_equal(img, stretch(vol[:, 5, :], vol, 0, 100))
