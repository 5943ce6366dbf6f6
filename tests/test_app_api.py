"""The app's HTTP API (FastAPI TestClient) on one tiny simulated atlas with known truth."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from cryoscout.app.server import create_app, is_loopback, resolve_token

SRC = str(Path(__file__).resolve().parents[1] / "src")


def wait_job(client, job_id: int, timeout: float = 240.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job}")


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory) -> Path:
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas, write_simulated_atlas

    root = tmp_path_factory.mktemp("app_data")
    sim = simulate_atlas(
        AtlasConfig(tiles_x=2, tiles_y=2, tile_size=512, crack_rate=0.3, contamination_rate=0.3),
        seed=5,
    )
    write_simulated_atlas(sim, root / "grid", fmt="epu")
    (root / "broken.dm").write_bytes(b"this is not an atlas")
    return root


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app_project")


@pytest.fixture(scope="module")
def client(project_dir, atlas_dir):
    app = create_app(project_dir, data_roots=[atlas_dir])
    with TestClient(app) as c:
        r = c.post("/api/atlases", json={"path": str(atlas_dir / "grid" / "Atlas.dm")})
        assert r.status_code == 201, r.text
        job = wait_job(c, r.json()["job"]["id"])
        assert job["state"] == "done", job
        yield c


def truth_labels(project_dir: Path, atlas_dir: Path, square_px: float) -> pd.DataFrame:
    """The simulator's true scores of the extracted squares (the oracle)."""
    from cryoscout.io.squares import labels_from_truth

    table = pd.read_csv(project_dir / "atlases" / "1" / "squares" / "squares.csv")
    truth = pd.read_csv(atlas_dir / "grid" / "truth.csv")
    return labels_from_truth(table, truth, 0.5 * square_px)


def test_screening_job_fills_the_cassette_table(client):
    rows = client.get("/api/atlases").json()
    assert len(rows) == 1 and rows[0]["status"] == "ready"
    row = rows[0]
    squares = client.get("/api/atlases/1/squares").json()["squares"]
    full = [s for s in squares if s["full"]]
    assert row["n_squares"] == len(squares) > 10
    assert row["n_full"] == len(full)
    assert row["n_good"] == sum(s["scores"]["overall"] >= 3 for s in full)
    assert row["median_overall"] == pytest.approx(
        np.median([s["scores"]["overall"] for s in full]), abs=1e-3
    )
    job = client.get(f"/api/jobs/{row['job_id']}").json()
    assert job["progress"] == 1.0 and job["kind"] == "screen"
    detail = client.get("/api/atlases/1").json()
    assert 0 < detail["opening_px"] < 400 and -90 <= detail["lattice_angle_deg"] <= 90
    png = client.get(detail["overview"]["url"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    import io

    from PIL import Image

    sheet = Image.open(io.BytesIO(client.get("/api/atlases/1/sprites/crop.png").content))
    cols, size = detail["sprites"]["cols"], detail["sprites"]["size"]
    assert sheet.size[0] == cols * size and sheet.size[1] >= len(squares) / cols * size
    overlay = Image.open(io.BytesIO(client.get("/api/atlases/1/sprites/cracking.png").content))
    assert overlay.mode == "RGBA" and overlay.size == sheet.size
    sid = squares[0]["square_id"]
    crop = Image.open(io.BytesIO(client.get(f"/api/atlases/1/squares/{sid}/crop.png").content))
    assert crop.mode == "L" and crop.size == (128, 128)
    big = client.get(f"/api/atlases/1/squares/{sid}/contamination.png")
    alpha = np.asarray(Image.open(io.BytesIO(big.content)))[..., 3]
    assert alpha.shape == (128, 128) and alpha.min() < 30 and alpha.max() > 150  # stretched
    assert client.get("/api/atlases/1/squares/99999/crop.png").status_code == 404
    report = client.get("/api/atlases/1/report.html")
    assert report.status_code == 200 and "<html" in report.text.lower()


def test_bad_atlas_is_a_failed_job_not_a_crash(client, atlas_dir):
    r = client.post("/api/atlases", json={"path": str(atlas_dir / "broken.dm")})
    assert r.status_code == 201
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "failed" and "broken.dm" in job["message"]
    atlas = client.get(f"/api/atlases/{r.json()['atlas']['id']}").json()
    assert atlas["status"] == "failed" and atlas["message"]
    assert client.get("/api/project").status_code == 200
    missing = client.post("/api/atlases", json={"path": str(atlas_dir / "nope.dm")})
    assert missing.status_code == 400 and "no such" in missing.json()["detail"]


def test_paths_outside_the_project_are_refused(client, project_dir):
    r = client.post("/api/atlases", json={"path": "../../../../etc/passwd"})
    assert r.status_code == 400 and "outside" in r.json()["detail"]
    r = client.post("/api/atlases", json={"path": "/etc/hostname"})
    assert r.status_code == 400
    assert client.get("/static/../cryoscout.db").status_code == 404
    assert client.get("/static/%2e%2e/%2e%2e/app/project.py").status_code == 404
    assert client.get("/api/atlases/1/sprites/..%2F..%2Fcryoscout.db.png").status_code in (404, 422)
    project = client.app.state.project
    with pytest.raises(PermissionError):
        project.project_file("../outside.txt")
    big = client.put("/api/labels", content=b"x" * 300_000)
    assert big.status_code == 413
    bad = client.put(
        "/api/labels",
        json={"atlas_id": 1, "square_id": 1, "attribute": "overall", "value": 7, "labeler": "a"},
    )
    assert bad.status_code == 422


def test_token_is_required_off_loopback(project_dir):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert resolve_token("127.0.0.1", None) is None
    generated = resolve_token("0.0.0.0", None)
    assert generated and len(generated) >= 20
    assert resolve_token("0.0.0.0", "given") == "given"
    app = create_app(project_dir, token="s3cret", run_jobs=False)
    with TestClient(app) as c:
        assert c.get("/api/project").status_code == 401
        assert c.get("/api/project", headers={"X-Cryoscout-Token": "wrong"}).status_code == 401
        assert c.get("/", params={"token": "s3cret"}).status_code in (200, 404)
        assert c.get("/api/project", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/atlases?token=s3cret").status_code == 200
        # Once a request carried the token, the page's scripts load through a cookie.
        assert c.get("/static/app.css").status_code == 200
    with TestClient(app) as fresh:
        assert fresh.get("/static/app.css").status_code == 401
        fresh.cookies.set("cryoscout_token", "wrong")
        assert fresh.get("/static/app.css").status_code == 401


def label(client, square_id, attribute="overall", value=3, labeler="alice", atlas_id=1):
    r = client.put(
        "/api/labels",
        json={
            "atlas_id": atlas_id,
            "square_id": int(square_id),
            "attribute": attribute,
            "value": value,
            "labeler": labeler,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_labels_persist_across_a_restart_and_undo(client, project_dir, atlas_dir):
    sq = [s["square_id"] for s in client.get("/api/atlases/1/squares").json()["squares"]]
    label(client, sq[0], "overall", 2)
    label(client, sq[0], "overall", 4)
    saved = label(client, sq[0], "cracking", 1)
    assert saved["labels"] == {"overall": 4, "cracking": 1}
    undone = client.post("/api/labels/undo", json={"labeler": "alice"}).json()
    assert undone["labels"] == {"overall": 4} and undone["undo_of"] == saved["id"]
    undone = client.post("/api/labels/undo", json={"labeler": "alice"}).json()
    assert undone["labels"] == {"overall": 2}
    # A new app on the same folder (a restart) shows the same state and the whole history.
    with TestClient(create_app(project_dir, data_roots=[atlas_dir], run_jobs=False)) as c2:
        square = next(
            s for s in c2.get("/api/atlases/1/squares").json()["squares"] if s["square_id"] == sq[0]
        )
        assert square["labels"] == {"overall": 2}
        history = c2.get(f"/api/labels?atlas_id=1&square_id={sq[0]}").json()
        assert [h["value"] for h in history][-3:] == [1, 4, 2]  # newest first
        assert len(history) == 5
        csv = c2.get("/api/atlases/1/labels.csv").text.splitlines()
        assert csv[0] == "square_id,brightness,squareness,cracking,contamination,overall"
        assert f"{sq[0]},,,,,2" in csv


def test_two_clients_labeling_at_once_lose_nothing(client, project_dir):
    sq = [s["square_id"] for s in client.get("/api/atlases/1/squares").json()["squares"]]
    before = len(client.get("/api/labels?limit=1000").json())
    errors = []

    def tab(name: str, attribute: str) -> None:
        c = TestClient(client.app)  # a second client of the same server (no second lifespan)
        for k, s in enumerate(sq):
            r = c.put(
                "/api/labels",
                json={
                    "atlas_id": 1,
                    "square_id": int(s),
                    "attribute": attribute,
                    "value": k % 5,
                    "labeler": name,
                },
            )
            if r.status_code != 200:
                errors.append(r.text)

    threads = [
        threading.Thread(target=tab, args=("tab1", "brightness")),
        threading.Thread(target=tab, args=("tab2", "squareness")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    history = client.get("/api/labels?limit=1000").json()
    assert len(history) == before + 2 * len(sq)
    squares = client.get("/api/atlases/1/squares").json()["squares"]
    for k, s in enumerate(squares):
        assert s["labels"]["brightness"] == k % 5 and s["labels"]["squareness"] == k % 5
    # Clearing (value null) is a label event too; the squares become unlabeled again.
    clear = [
        {"atlas_id": 1, "square_id": int(s), "attribute": a, "value": None, "labeler": "tab1"}
        for s in sq
        for a in ("brightness", "squareness")
    ]
    assert client.put("/api/labels/batch", json={"labels": clear}).status_code == 200
    squares = client.get("/api/atlases/1/squares").json()["squares"]
    assert not any({"brightness", "squareness"} & set(s["labels"]) for s in squares)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kill_9_loses_no_saved_label(client, project_dir):
    import httpx

    sq = [s["square_id"] for s in client.get("/api/atlases/1/squares").json()["squares"]]
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=SRC, CRYOSCOUT_NO_PROGRESS="1")
    code = (
        "from cryoscout.app.serve import serve; "
        f"serve({str(project_dir)!r}, port={port}, echo=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                httpx.get(url + "/api/project", timeout=1.0)
                break
            except httpx.HTTPError:
                time.sleep(0.25)
        r = httpx.put(
            url + "/api/labels",
            json={
                "atlas_id": 1,
                "square_id": int(sq[-1]),
                "attribute": "contamination",
                "value": 3,
                "labeler": "crash-test",
            },
        )
        assert r.status_code == 200
        proc.send_signal(signal.SIGKILL)  # straight after the page would show "saved"
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    conn = sqlite3.connect(project_dir / "cryoscout.db")
    rows = conn.execute(
        "SELECT value FROM labels WHERE labeler = 'crash-test' AND square_id = ?", (int(sq[-1]),)
    ).fetchall()
    conn.close()
    assert rows == [(3,)]


def test_suggest_prefers_uncertain_and_novel_squares():
    from cryoscout.screening.active import suggest

    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, (50, 4))
    b = rng.normal(5, 0.1, (50, 4))
    feats = np.concatenate([a, b])
    unc = np.full(100, 0.1)
    labeled = np.zeros(100, bool)
    labeled[:5] = True  # cluster a is already labeled
    order, _ = suggest(feats, unc, labeled, ~labeled, 3)
    assert order[0] >= 50  # the first pick comes from the unlabeled cluster
    assert not labeled[order].any()
    same = np.zeros((100, 4))
    unc2 = np.linspace(0, 1, 100)
    order, _ = suggest(same, unc2, np.zeros(100, bool), np.ones(100, bool), 1)
    assert order[0] == 99  # identical features: the most uncertain square


def test_suggestions_rank_uncertain_diverse_unlabeled_squares(client):
    squares = client.get("/api/atlases/1/squares").json()["squares"]
    labeled = {s["square_id"] for s in squares if s["labels"]}
    cands = [s for s in squares if s["full"] and s["square_id"] not in labeled]
    got = client.get("/api/suggestions?n=8").json()["squares"]
    assert len(got) == min(8, len(cands))
    ids = [g["square_id"] for g in got]
    assert not set(ids) & labeled
    assert [g["rank"] for g in got] == list(range(1, len(got) + 1))
    mean_u = np.mean([s["uncertainty"] for s in cands])
    assert np.mean([g["uncertainty"] for g in got]) > mean_u
    rng = np.random.default_rng(0)
    random_picks = [
        set(rng.choice([s["square_id"] for s in cands], 8, replace=False)) for _ in range(5)
    ]
    assert all(set(ids) != r for r in random_picks)
    # Labeling the first suggestion removes it from the list.
    label(client, ids[0], "overall", 1, labeler="bob")
    again = [g["square_id"] for g in client.get("/api/suggestions?n=8").json()["squares"]]
    assert ids[0] not in again


def test_the_baseline_is_a_model_version_without_attention(client, project_dir):
    from cryoscout.io.mrc import read_mrc
    from cryoscout.screening.predict import load_model

    base = next(m for m in client.get("/api/models").json() if m["path"] == "baseline")
    assert base["id"] == 2 and not base["current"]
    assert client.post(f"/api/models/{base['id']}/activate").status_code == 200
    rescore = next(j for j in client.get("/api/jobs").json() if j["kind"] == "rescore")
    assert wait_job(client, rescore["id"])["state"] == "done"
    got = client.get("/api/atlases/1/squares").json()
    assert got["model_id"] == base["id"]
    # Its scores are the baseline's own on the extracted squares; it draws no attention.
    stack, _ = read_mrc(project_dir / "atlases" / "1" / "squares" / "squares.mrcs")
    want = load_model("baseline").predict(stack, attention=False).scores["overall"]
    overall = [s["scores"]["overall"] for s in sorted(got["squares"], key=lambda s: s["index"])]
    np.testing.assert_allclose(overall, want.to_numpy(), atol=1e-4)
    assert "crop" in got["sprites"] and "cracking" not in got["sprites"]
    assert "cracking" in client.get("/api/atlases/1/squares?model=1").json()["sprites"]
    assert client.get("/api/atlases/1/squares/1/cracking.png").status_code == 404


def test_training_creates_a_model_version_and_rescores(client, project_dir, atlas_dir):
    # With the baseline current (trees, no network) training fine-tunes the shipped network.
    assert client.post("/api/models/2/activate").status_code == 200
    detail = client.get("/api/atlases/1").json()
    truth = truth_labels(project_dir, atlas_dir, detail["square_px"])
    assert len(truth) >= 10
    batch = [
        {
            "atlas_id": 1,
            "square_id": int(r.square_id),
            "attribute": a,
            "value": round(getattr(r, a)),
            "labeler": "oracle",
        }
        for r in truth.itertuples()
        for a in ("brightness", "squareness", "cracking", "contamination", "overall")
    ]
    assert client.put("/api/labels/batch", json={"labels": batch}).status_code == 200
    r = client.post("/api/train", json={"epochs": 1, "unlabeled": 8, "batch_size": 16})
    assert r.status_code == 201, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["progress"] == 1.0 and job["losses"]
    models = client.get("/api/models").json()
    new = models[-1]
    assert len(models) == 3 and new["current"] and new["parent"] == 1  # 2 is the baseline
    assert new["n_test"] > 0 and set(new["error_before"]) == set(new["error_after"])
    assert all(0 <= v <= 4 for v in new["error_after"].values())
    # Fine-tuning keeps the shipped model's batch-norm statistics (few labels, small batches).
    from cryoscout.screening.predict import load_model

    tuned, shipped = load_model(new["path"]).net.state_dict(), load_model(None).net.state_dict()
    stats = [k for k in shipped if k.endswith("running_mean")]
    assert stats and all(np.array_equal(tuned[k], shipped[k]) for k in stats)
    assert any(not np.array_equal(tuned[k], shipped[k]) for k in shipped if k.endswith("weight"))
    # The rescoring job scores the atlas with the new version.
    rescore = next(j for j in client.get("/api/jobs").json() if j["kind"] == "rescore")
    assert wait_job(client, rescore["id"])["state"] == "done"
    sq = client.get("/api/atlases/1/squares").json()
    assert sq["model_id"] == new["id"] and all(
        s["scores"]["overall"] is not None for s in sq["squares"]
    )
    old = client.get("/api/atlases/1/squares?model=1").json()["squares"]
    assert any(
        abs(a["scores"]["overall"] - b["scores"]["overall"]) > 1e-4
        for a, b in zip(old, sq["squares"], strict=True)
    )
    # labels.csv as `cryoscout train` reads it.
    from cryoscout.screening.data import labels_array

    table = pd.read_csv(project_dir / "atlases" / "1" / "squares" / "squares.csv")
    labels = pd.read_csv(project_dir / "atlases" / "1" / "squares" / "labels.csv")
    arr = labels_array(table, labels)
    assert (~np.isnan(arr[:, 4])).sum() >= len(truth)


def test_targets_nav_parses_and_follows_hand_edits(client, tmp_path):
    from cryoscout.io.navigator import read_navigator

    t = client.get("/api/atlases/1/targets?top_k=5").json()
    assert len(t["targets"]) == 5
    top = [x["square_id"] for x in t["targets"]]
    squares = client.get("/api/atlases/1/squares").json()["squares"]
    outsider = next(s["square_id"] for s in squares if s["full"] and s["square_id"] not in top)
    t = client.post(
        "/api/targets", json={"atlas_id": 1, "top_k": 5, "add": [outsider], "remove": [top[0]]}
    ).json()
    chosen = [x["square_id"] for x in t["targets"]]
    assert outsider in chosen and top[0] not in chosen and len(chosen) == 6
    sources = {x["square_id"]: x["source"] for x in t["targets"]}
    assert sources[outsider] == "added" and sources[top[1]] == "top-k"
    by_default = client.get("/api/atlases/1/targets?top_k=5&model=1").json()["targets"]
    assert outsider in [x["square_id"] for x in by_default]  # hand edits apply to any model
    nav = client.get("/api/atlases/1/targets.nav")
    assert nav.status_code == 200
    (tmp_path / "t.nav").write_text(nav.text)
    items = read_navigator(tmp_path / "t.nav")
    assert len(items) == len(chosen)
    csv = pd.read_csv(__import__("io").StringIO(client.get("/api/atlases/1/targets.csv").text))
    assert list(csv["square_id"]) == chosen
    old_csv = client.get("/api/atlases/1/targets.csv?model=1").text
    old_ids = list(pd.read_csv(__import__("io").StringIO(old_csv))["square_id"])
    assert old_ids == [x["square_id"] for x in by_default]
    xyz = [float(v) for v in items[0]["StageXYZ"].split()]
    assert xyz[:2] == pytest.approx([csv["stage_x_um"][0], csv["stage_y_um"][0]], abs=1e-3)


def test_json_columns_never_hold_nan():
    from cryoscout.app import db

    text = db.dumps({"overall": float("nan"), "cracking": 0.5, "steps": [float("inf"), 1.0]})
    assert text == '{"overall": null, "cracking": 0.5, "steps": [null, 1.0]}'


def test_restart_interrupts_running_jobs_and_training_resumes(tmp_path):
    from cryoscout.app import db
    from cryoscout.app.project import Project

    p = Project(tmp_path)
    run = p.create_job("train", {"epochs": 3, "run_dir": "models/train-1"})
    queued = p.create_job("train", {"epochs": 3, "run_dir": "models/train-2"})
    p.update_job(run["id"], state="running")
    (tmp_path / "models" / "train-1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "train-1" / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    p.close()
    # A new server on the folder: the job the old one was running is interrupted, resumable.
    app = create_app(tmp_path, run_jobs=False)
    app.state.project.interrupt_running_jobs()  # what the job runner does at start
    with TestClient(app) as c:
        job = c.get(f"/api/jobs/{run['id']}").json()
        assert job["state"] == "interrupted" and job["resumable"]
        assert c.post(f"/api/jobs/{queued['id']}/resume").status_code == 409
        new = c.post(f"/api/jobs/{run['id']}/resume").json()
        assert new["state"] == "queued" and new["kind"] == "train"
        assert new["params"]["resume"] == "models/train-1/checkpoints/last.ckpt"
        cancelled = c.post(f"/api/jobs/{queued['id']}/cancel").json()
        assert cancelled["state"] == "cancelled" and cancelled["finished"]
        # A final state is final: a late progress report from a worker does not revive it.
        app.state.project.update_job(queued["id"], state="running", progress=0.5)
        assert c.get(f"/api/jobs/{queued['id']}").json()["state"] == "cancelled"
        assert c.post("/api/train", json={"epochs": 1}).status_code == 400  # no labels yet
    assert db.FINAL_STATES == ("done", "failed", "cancelled", "interrupted")


def test_projects_made_before_the_baseline_get_it_once(tmp_path):
    from cryoscout.app.project import Project

    p = Project(tmp_path)
    with p.conn:  # as a project made before the baseline was offered
        p.conn.execute("DELETE FROM models WHERE path = 'baseline'")
    p.close()
    for _ in range(2):  # reopened twice: one baseline, after the shipped network
        p = Project(tmp_path)
        paths = [m["path"] for m in p.models()]
        p.close()
    assert paths == [None, "baseline"]
