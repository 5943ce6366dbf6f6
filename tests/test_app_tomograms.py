"""The app's tomogram workspace (docs/app-api-tomograms.md) through its HTTP API."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from copick_support import copick_project

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
    write_mrc(root / "TS_02.mrc", rng.normal(size=(10, 16, 24)).astype(np.float32), VOXEL_A)
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


def test_a_relion4_star_of_several_tomograms_imports_this_tomograms_rows(client, data_dir):
    import pandas as pd
    import starfile

    # Unbinned tilt-series pixels (binning 4) of two tomograms; only TS_01's belong here.
    table = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_99", "TS_01"],
            "rlnCoordinateX": [40.0, 8.0, 4.0],
            "rlnCoordinateY": [20.0, 8.0, 4.0],
            "rlnCoordinateZ": [12.0, 8.0, 4.0],
        }
    )
    path = data_dir / "two_tomograms.star"
    starfile.write({"particles": table}, path, overwrite=True)
    url = "/api/tomograms/1/annotations/import"
    body = {"path": str(path), "class": "ribosome"}
    refused = client.post(url, json=body)
    assert refused.status_code == 400 and "two_tomograms.star" in refused.json()["detail"]
    assert "tilt-series pixel size" in refused.json()["detail"]
    before = {a["id"] for a in client.get("/api/tomograms/1/annotations").json()}
    assert client.post(url, json=body | {"binning": 4}).json() == {"added": 2}
    new = [a for a in client.get("/api/tomograms/1/annotations").json() if a["id"] not in before]
    assert [(a["x"], a["y"], a["z"]) for a in new] == [(10.0, 5.0, 3.0), (1.0, 1.0, 1.0)]


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


# -- export -----------------------------------------------------------------------------
ANNOTATED = [("ribosome", 10.0, 5.5, 3.0), ("proteasome", 40.25, 30.0, 19.0), ("ribosome", 0, 0, 0)]


@pytest.fixture(scope="module")
def exporter(tmp_path_factory, data_dir):
    """A project with two tomograms, known annotations on the first and picks on both."""
    project = tmp_path_factory.mktemp("export_project")
    with make_client(project, data_dir) as c:
        for name in ("rec_TS_01.mrc", "TS_02.mrc"):
            assert c.post("/api/tomograms", json={"path": str(data_dir / name)}).status_code == 201
        for name, radius in (("ribosome", 120.0), ("proteasome", 60.0)):
            c.post("/api/particle-classes", json={"name": name, "radius_A": radius})
        for cls, x, y, z in ANNOTATED:
            r = c.post("/api/tomograms/1/annotations", json={"class": cls, "x": x, "y": y, "z": z})
            assert r.status_code == 201, r.text
        c.post("/api/tomograms/2/annotations", json={"class": "ribosome", "x": 3, "y": 4, "z": 5})
        # Picks as the picker jobs store them: two pickers, scores, review decisions.
        conn = c.app.state.project.conn
        rows = [
            (1, 1, 1, 11.0, 6.0, 3.0, 0.9, "accepted"),
            (1, 1, 2, 20.0, 20.0, 10.0, 0.6, "pending"),
            (1, 1, 1, 30.0, 8.0, 12.0, 0.3, "pending"),
            (1, 1, 1, 5.0, 5.0, 5.0, 0.95, "rejected"),
            (2, 1, 1, 1.0, 2.0, 3.0, 0.99, "pending"),
            (2, 2, 1, 7.0, 8.0, 9.0, 0.8, "pending"),
        ]
        conn.executemany("INSERT INTO pickers (id, name) VALUES (?, ?)", [(1, "p1"), (2, "p2")])
        conn.executemany(
            "INSERT INTO picks (picker_id, tomogram_id, class_id, x, y, z, score, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        c.data_dir = data_dir
        yield c


def download(response, tmp_path: Path) -> Path:
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    name = disposition.split('filename="')[1].rstrip('"')
    path = tmp_path / name
    path.write_bytes(response.content)
    return path


def star_particles(path: Path):
    import starfile

    star = starfile.read(path)
    return star["particles"] if isinstance(star, dict) else star


def test_relion5_export_is_centred_angstrom_and_reads_back(exporter, tmp_path):
    from cryoscout.io.coords import read_coords

    path = download(exporter.get("/api/tomograms/1/export?format=relion5"), tmp_path)
    assert path.name == "TS_01_annotations.star"
    table = star_particles(path)
    assert list(table["rlnTomoName"]) == ["TS_01"] * 3
    xyz = np.array([a[1:] for a in ANNOTATED])
    centre = np.array([52, 36, 20]) / 2  # (x, y, z): RELION 5 centres at N / 2
    np.testing.assert_allclose(
        table[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy(),
        (xyz - centre) * VOXEL_A,
    )
    assert list(table["rlnClassNumber"]) == [1, 2, 1]  # ribosome, proteasome: order created
    back = read_coords(path, voxel_size_A=VOXEL_A, shape=SHAPE)
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), xyz, atol=1e-4)


def test_relion4_export_needs_the_binning_and_multiplies_by_it(exporter, tmp_path):
    from cryoscout.io.coords import read_coords

    refused = exporter.get("/api/tomograms/1/export?format=relion4")
    assert refused.status_code == 400 and "tilt-series pixel size" in refused.json()["detail"]
    by_bin = download(exporter.get("/api/tomograms/1/export?format=relion4&binning=4"), tmp_path)
    xyz = np.array([a[1:] for a in ANNOTATED])
    coords = star_particles(by_bin)[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]]
    np.testing.assert_allclose(coords.to_numpy(), xyz * 4)
    by_size = exporter.get("/api/tomograms/1/export?format=relion4&tilt_series_pixel_size=2.5")
    by_size = star_particles(download(by_size, tmp_path))
    np.testing.assert_allclose(by_size[coords.columns].to_numpy(), xyz * 4)  # 10 Å / 2.5 Å
    back = read_coords(by_bin, binning=4, shape=SHAPE)
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), xyz, atol=1e-4)


def test_csv_and_coords_exports(exporter, tmp_path):
    import pandas as pd

    csv = pd.read_csv(download(exporter.get("/api/tomograms/1/export?format=csv"), tmp_path))
    assert list(csv["name"]) == ["ribosome", "proteasome", "ribosome"]
    assert csv["x"].tolist() == [10.0, 40.25, 0.0]
    coords = exporter.get("/api/tomograms/1/export?format=coords").text.splitlines()
    assert coords == ["1 10 5.5000 3", "2 40.2500 30 19", "1 0 0 0"]


def test_picks_export_filters_by_picker_threshold_and_status(exporter, tmp_path):
    import pandas as pd

    def picks(query: str) -> pd.DataFrame:
        r = exporter.get(f"/api/tomograms/1/export?what=picks&format=csv&{query}")
        return pd.read_csv(download(r, tmp_path))

    latest = picks("")  # the latest picker on tomogram 1 is picker 2
    assert latest[["x", "y", "z"]].values.tolist() == [[1.0, 2.0, 3.0]]
    first = picks("picker=1")  # the rejected pick is left out, best score first
    assert first["score"].tolist() == [0.9, 0.6, 0.3]
    assert first["name"].tolist() == ["ribosome", "proteasome", "ribosome"]
    assert picks("picker=1&threshold=0.5")["score"].tolist() == [0.9, 0.6]
    assert picks("picker=1&status=accepted")["score"].tolist() == [0.9]


def test_all_tomograms_go_into_one_star(exporter, tmp_path):
    path = download(exporter.get("/api/export?format=relion5"), tmp_path)
    table = star_particles(path)
    assert table["rlnTomoName"].tolist() == ["TS_01"] * 3 + ["TS_02"]
    # TS_02 is 24 x 16 x 10: (3, 4, 5) is (-9, -4, 0) voxels from its centre.
    np.testing.assert_allclose(
        table.iloc[3][[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy(float),
        [-90.0, -40.0, 0.0],
    )
    assert exporter.get("/api/export?format=coords").status_code == 400


def test_copick_export_is_read_back_by_copick(exporter):
    copick = pytest.importorskip("copick")
    from cryoscout.io.copick_project import read_copick_picks

    root = exporter.data_dir  # where the app may read
    both = copick_project(root / "copick-both", ("ribosome", "proteasome"), runs=())
    only_ribosome = copick_project(root / "copick-ribo", ("ribosome",), runs=())
    no_project = exporter.post("/api/export/copick", json={"what": "annotations"})
    assert no_project.status_code == 400  # MRC tomograms: the copick project must be given
    body = {"config": str(only_ribosome), "tomograms": [1]}
    unknown = exporter.post("/api/export/copick", json=body)
    assert unknown.status_code == 400 and "proteasome" in unknown.json()["detail"]
    body = {"config": str(both), "what": "annotations", "tomograms": [1, 2], "user_id": "alice"}
    r = exporter.post("/api/export/copick", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "written": {"TS_01": {"ribosome": 2, "proteasome": 1}, "TS_02": {"ribosome": 1}},
        "config": str(both),
    }
    # copick's own API: points in Å, in runs named after the tomograms.
    run = copick.from_file(str(both)).get_run("TS_01")
    (ribo,) = run.get_picks(object_name="ribosome", user_id="alice", session_id="0")
    np.testing.assert_allclose(ribo.numpy()[0], [[100.0, 55.0, 30.0], [0.0, 0.0, 0.0]])
    (prot,) = run.get_picks(object_name="proteasome", user_id="alice", session_id="0")
    np.testing.assert_allclose(prot.numpy()[0], [[402.5, 300.0, 190.0]])
    back = read_copick_picks(both, "alice", "0").table
    assert sorted(zip(back["tomo"], back["name"], strict=True)) == [
        ("TS_01", "proteasome"), ("TS_01", "ribosome"), ("TS_01", "ribosome"),
        ("TS_02", "ribosome"),
    ]  # fmt: skip


def test_a_copick_tomogram_exports_into_its_own_project(tmp_path):
    copick = pytest.importorskip("copick")
    config = copick_project(tmp_path / "cp")
    with make_client(tmp_path / "project", tmp_path) as c:
        c.post("/api/tomograms", json={"path": str(config)})
        # The project's particle types became classes, so its names export back.
        (ribo,) = c.get("/api/particle-classes").json()
        assert (ribo["name"], ribo["radius_A"], ribo["colour"]) == ("ribosome", 120.0, "#00ff00")
        c.post("/api/tomograms/2/annotations", json={"class": "ribosome", "x": 1, "y": 2, "z": 3})
        r = c.post("/api/export/copick", json={})
        assert r.status_code == 200, r.text
        assert r.json() == {"written": {"TS_1": {}, "TS_2": {"ribosome": 1}}, "config": str(config)}
    (picks,) = copick.from_file(str(config)).get_run("TS_2").get_picks(user_id="cryoscout")
    np.testing.assert_allclose(picks.numpy()[0], [[10.0, 20.0, 30.0]])


def test_the_example_project_has_tomograms_classes_and_truth_to_import(tmp_path):
    import pandas as pd

    from cryoscout.app.example import TOMO_SHAPE, make_example_project

    make_example_project(tmp_path / "example", n=0, tomograms=1).close()
    with make_client(tmp_path / "example", tmp_path) as c:
        (tomo,) = c.get("/api/tomograms").json()
        assert tomo["name"] == "TS_01" and tomo["n_annotations"] == {}
        assert tomo["shape"] == dict(zip("zyx", TOMO_SHAPE, strict=True))
        folder = tmp_path / "example" / "data"
        classes = pd.read_csv(folder / "tomograms" / "TS_01" / "classes.csv")
        found = {k["name"]: k["radius_vox"] for k in c.get("/api/particle-classes").json()}
        assert found == dict(zip(classes["name"], classes["radius_vox"], strict=True))
        truth = pd.read_csv(folder / "truth_TS_01.csv")
        r = c.post(
            "/api/tomograms/1/annotations/import", json={"path": str(folder / "truth_TS_01.csv")}
        )
        assert r.json() == {"added": len(truth)} and len(truth) > 20
        counts = c.get("/api/tomograms/1").json()["n_annotations"]
        assert counts == truth["name"].value_counts().to_dict()
