"""The app's picker API: train and predict jobs, picks review, evaluation, cancel.

A small simulated tomogram (known particle centres) is annotated with a few of its true
centres; the picker trains for 2 epochs of 8 patches with a tiny network, so the jobs
take seconds. Evaluation is checked on hand-placed picks and annotations whose
precision, recall and F1 are computed by hand.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from cryoscout.app.server import create_app

TINY = {"epochs": 2, "samples_per_epoch": 8, "patch": 32, "channels": [4, 8], "batch_size": 4}


def wait_job(client, job_id: int, timeout: float = 300.0, until=("queued", "running")) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in until:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job}")


def add_tomogram(client, path: Path) -> int:
    r = client.post("/api/tomograms", json={"path": str(path)})
    assert r.status_code == 201, r.text
    return r.json()["tomograms"][0]["id"]


def add_class(client, name: str, **radius) -> int:
    r = client.post("/api/particle-classes", json={"name": name, **radius})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def add_annotations(client, tomogram_id: int, name: str, xyz) -> None:
    for x, y, z in xyz:
        r = client.post(
            f"/api/tomograms/{tomogram_id}/annotations",
            json={"class": name, "x": float(x), "y": float(y), "z": float(z), "labeler": "alice"},
        )
        assert r.status_code == 201, r.text


def annotations(client, tomogram_id: int) -> list[dict]:
    r = client.get(f"/api/tomograms/{tomogram_id}/annotations")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A simulated tomogram (two classes, 16 particles) written as the simulator writes it."""
    from cryoscout.simulate.tomogram import (
        TomogramConfig,
        simulate_tomogram,
        write_simulated_tomogram,
    )

    root = tmp_path_factory.mktemp("picker_project")
    sim = simulate_tomogram(
        TomogramConfig(
            shape=(32, 64, 64), voxel_size_A=20.0, n_particles=16, shapes=("sphere", "ring")
        ),
        seed=1,
    )
    files = write_simulated_tomogram(sim, root / "data" / "tomo1")
    return {"root": root, "sim": sim, "tomogram": files["tomogram"]}


@pytest.fixture(scope="module")
def client(sim):
    with TestClient(create_app(sim["root"])) as c:
        yield c


@pytest.fixture(scope="module")
def project(sim, client):
    """The simulated tomogram in the project, its two classes and 4 annotations per class."""
    s = sim["sim"]
    tid = add_tomogram(client, sim["tomogram"])
    ids = {}
    for c, name in enumerate(s.class_names, start=1):
        ids[name] = add_class(client, name, radius_vox=s.radii[c])
        xyz = s.particles[s.particles["class"] == c][["x", "y", "z"]].to_numpy()[:4]
        add_annotations(client, tid, name, xyz)
    return {"dir": sim["root"], "tomogram": tid, "classes": ids, "sim": s}


@pytest.fixture(scope="module")
def trained(client, project):
    r = client.post("/api/picker/train", json=TINY)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["job"]["kind"] == "pick_train" and out["picker"]["status"] == "training"
    job = wait_job(client, out["job"]["id"])
    assert job["state"] == "done", job
    return {"job": job, "picker": out["picker"]["id"]}


@pytest.fixture(scope="module")
def predicted(client, project, trained):
    r = client.post("/api/picker/predict", json={"picker": trained["picker"]})
    assert r.status_code == 201, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "done", job
    return job


def test_train_job_registers_a_ready_picker_with_loadable_weights(client, project, trained):
    import torch
    import yaml

    job = trained["job"]
    assert [e["epoch"] for e in job["losses"]] == [1, 2]
    assert all(0 <= e["train_loss"] <= 1 for e in job["losses"])  # soft Dice
    assert job["progress"] == 1.0
    picker = client.get(f"/api/pickers/{trained['picker']}").json()
    assert picker["status"] == "ready" and picker["job_id"] == job["id"]
    assert picker["classes"] == list(project["classes"])
    assert picker["n_annotations"] == 8
    assert [p["id"] for p in client.get("/api/pickers").json()] == [trained["picker"]]
    folder = project["dir"] / "pickers" / str(trained["picker"])
    record = torch.load(folder / "model.pt", weights_only=True)
    assert record["class_names"] == list(project["classes"])
    # The particle radius (MP-NMS size at prediction) is the class's; labels 0.6 of it.
    sim = project["sim"]
    assert record["extra"]["particle_radius"] == {"1": sim.radii[1], "2": sim.radii[2]}
    assert record["radius"] == {"1": round(0.6 * sim.radii[1]), "2": round(0.6 * sim.radii[2])}
    config = yaml.safe_load((folder / "config.yaml").read_text())["config"]
    assert config["n_particles"] == 8 and config["epochs"] == 2 and config["channels"] == [4, 8]
    assert not (folder / "INCOMPLETE").exists()


def test_predict_stores_scored_picks_per_class(client, project, trained, predicted):
    assert predicted["kind"] == "pick_predict" and predicted["progress"] == 1.0
    out = client.get(f"/api/tomograms/{project['tomogram']}/picks").json()
    assert out["picker"] == trained["picker"]
    picks = out["picks"]
    assert picks, "the picker found nothing"
    assert predicted["result"]["picks"] == {"tomo1": len(picks)}
    scores = [p["score"] for p in picks]
    assert all(0 < s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert {p["class"] for p in picks} <= set(project["classes"])
    assert all(p["status"] == "pending" and p["annotation_id"] is None for p in picks)
    shape = project["sim"].tomogram.shape
    assert all(
        0 <= p["x"] < shape[2] and 0 <= p["y"] < shape[1] and 0 <= p["z"] < shape[0] for p in picks
    )
    # The same picks went to the picker's CSV, as `pick predict` writes them.
    csv = project["dir"] / "pickers" / str(trained["picker"]) / "picks" / "1_tomo1_picks.csv"
    assert csv.is_file() and len(csv.read_text().strip().splitlines()) == len(picks) + 1


def test_accept_reject_reset_make_and_remove_annotations(client, project, predicted):
    tid = project["tomogram"]
    pick = client.get(f"/api/tomograms/{tid}/picks").json()["picks"][0]
    before = len(annotations(client, tid))
    r = client.put(f"/api/picks/{pick['id']}", json={"status": "accepted", "labeler": "bob"})
    assert r.status_code == 200, r.text
    ann = r.json()["annotation"]
    assert r.json()["pick"]["status"] == "accepted"
    assert r.json()["pick"]["annotation_id"] == ann["id"]
    assert (ann["source"], ann["pick_id"], ann["class"], ann["labeler"]) == (
        "pick",
        pick["id"],
        pick["class"],
        "bob",
    )
    assert (ann["x"], ann["y"], ann["z"]) == (pick["x"], pick["y"], pick["z"])
    # Accepting again adds nothing.
    again = client.put(f"/api/picks/{pick['id']}", json={"status": "accepted"}).json()
    assert again["annotation"]["id"] == ann["id"]
    assert len(annotations(client, tid)) == before + 1
    # Rejecting removes the annotation it made; resetting a rejected pick changes nothing else.
    rej = client.put(f"/api/picks/{pick['id']}", json={"status": "rejected"}).json()
    assert rej["pick"]["status"] == "rejected" and rej["annotation"] is None
    assert len(annotations(client, tid)) == before
    reset = client.put(f"/api/picks/{pick['id']}", json={"status": "pending"}).json()
    assert reset["pick"] == {**pick, "status": "pending"}
    # Accept, then reset: the annotation goes too.
    client.put(f"/api/picks/{pick['id']}", json={"status": "accepted"})
    client.put(f"/api/picks/{pick['id']}", json={"status": "pending"})
    assert len(annotations(client, tid)) == before
    # Undo (the annotation log) takes an accepted pick's annotation back: pending again.
    client.put(f"/api/picks/{pick['id']}", json={"status": "accepted", "labeler": "carol"})
    undone = client.post("/api/annotations/undo", json={"labeler": "carol"})
    assert undone.status_code == 200, undone.text
    assert undone.json()["undone"]["action"] == "add"
    assert len(annotations(client, tid)) == before
    now = client.get(f"/api/tomograms/{tid}/picks").json()["picks"]
    assert next(p for p in now if p["id"] == pick["id"])["status"] == "pending"
    assert client.put("/api/picks/999999", json={"status": "accepted"}).status_code == 404
    assert client.put(f"/api/picks/{pick['id']}", json={"status": "maybe"}).status_code == 422


def test_accept_by_threshold_and_predict_again_keeps_decisions(client, project, trained):
    tid = project["tomogram"]
    picks = client.get(f"/api/tomograms/{tid}/picks").json()["picks"]
    threshold = float(np.median([p["score"] for p in picks]))
    rejected = next(p for p in picks if p["score"] >= threshold)
    client.put(f"/api/picks/{rejected['id']}", json={"status": "rejected"})
    expected = sum(p["score"] >= threshold and p["id"] != rejected["id"] for p in picks)
    n_before = len(annotations(client, tid))
    r = client.post(f"/api/tomograms/{tid}/picks/accept", json={"threshold": threshold})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == expected > 0
    after = {p["id"]: p for p in client.get(f"/api/tomograms/{tid}/picks").json()["picks"]}
    for p in picks:
        want = (
            "rejected"
            if p["id"] == rejected["id"]
            else ("accepted" if p["score"] >= threshold else "pending")
        )
        assert after[p["id"]]["status"] == want
    assert len(annotations(client, tid)) == n_before + expected
    # Nothing pending is left above the threshold: accepting again adds none.
    again = client.post(f"/api/tomograms/{tid}/picks/accept", json={"threshold": threshold})
    assert again.json()["accepted"] == 0


def test_new_predictions_keep_decisions_at_the_same_place(client, project, predicted):
    """What a second prediction stores (``store_picks``, the job's last step)."""
    import pandas as pd

    from cryoscout.app import pickers

    tid, p = project["tomogram"], client.app.state.project
    listing = client.get(f"/api/tomograms/{tid}/picks").json()
    picker_id, old = listing["picker"], listing["picks"]
    sphere = [q for q in old if q["class"] == "sphere"]
    assert len(sphere) >= 4, "too few picks of one class for this test"
    keep, gone_acc, gone_rej, moved_rej = sphere[:4]
    for q, status in ((keep, "accepted"), (gone_acc, "accepted"), (gone_rej, "rejected")):
        client.put(f"/api/picks/{q['id']}", json={"status": status})
    client.put(f"/api/picks/{moved_rej['id']}", json={"status": "rejected"})
    before = client.get(f"/api/tomograms/{tid}/picks").json()["picks"]
    keep = next(q for q in before if q["id"] == sphere[0]["id"])
    accepted = {q["id"] for q in before if q["status"] == "accepted"}
    r = project["sim"].radii[1]  # sphere's particle radius: "same place" is within r / 2
    rows = [
        (1, keep["x"] + 0.3 * r, keep["y"], keep["z"], 0.61),  # takes over `keep`
        (1, moved_rej["x"], moved_rej["y"] + 0.45 * r, moved_rej["z"], 0.52),  # still rejected
        (1, 1.0, 2.0, 3.0, 0.4),  # a new place: pending
    ]
    new = pd.DataFrame(rows, columns=["class", "x", "y", "z", "score"])
    ids = project["classes"]
    assert (
        pickers.store_picks(
            p, picker_id, tid, new, {1: ids["sphere"], 2: ids["ring"]}, {ids["sphere"]: r}
        )
        == 3
    )
    now = {q["id"]: q for q in client.get(f"/api/tomograms/{tid}/picks").json()["picks"]}
    # The decided picks at the new places keep id, status and annotation; the accepted pick
    # with no new pick nearby stays (it is an annotation); the rest is replaced.
    assert now[keep["id"]] == {**keep, "x": rows[0][1], "score": 0.61}
    assert now[moved_rej["id"]]["status"] == "rejected"
    assert now[moved_rej["id"]]["y"] == rows[1][2]
    assert now[gone_acc["id"]]["status"] == "accepted"
    # Every accepted pick stays; of the others only the one at a new place is left.
    assert gone_rej["id"] not in now
    assert set(now) - accepted - {moved_rej["id"]} == {max(now)}
    fresh = [now[max(now)]]
    # A new pick never takes the id of a replaced one (a page may still hold that id).
    assert max(now) > max(q["id"] for q in old)
    assert [(q["x"], q["y"], q["z"], q["status"]) for q in fresh] == [(1.0, 2.0, 3.0, "pending")]
    by_ann = {a["id"]: a for a in annotations(client, tid)}
    assert by_ann[keep["annotation_id"]]["pick_id"] == keep["id"]


def test_evaluate_against_hand_placed_annotations(client, project):
    """Hand-computed one-to-one precision/recall/F1 at two thresholds."""
    from cryoscout.app import db
    from cryoscout.io.mrc import write_mrc

    root = project["dir"]
    write_mrc(root / "data" / "hand.mrc", np.zeros((80, 80, 80), np.float32), 20.0)
    tid = add_tomogram(client, root / "data" / "hand.mrc")
    disc = add_class(client, "disc", radius_A=60.0)  # 3 voxels at 20 Å
    other = add_class(client, "other", radius_vox=4.0)
    add_annotations(client, tid, "disc", [(10, 10, 10), (30, 30, 30), (50, 50, 50)])
    conn = db.connect(root / "cryoscout.db")
    cur = conn.execute(
        "INSERT INTO pickers (name, created, classes) VALUES ('hand', ?, ?)",
        (db.now(), db.dumps(["disc", "other"])),
    )
    picker = cur.lastrowid
    picks = [
        (disc, 11, 10, 10, 0.9),  # 1 voxel off: hit
        (disc, 30, 33, 30, 0.8),  # 3 voxels off: hit (the radius is inclusive)
        (disc, 70, 70, 70, 0.7),  # nothing there: false positive
        (disc, 50, 50, 52, 0.3),  # a hit, but below 0.5
        (other, 20, 20, 20, 0.95),  # a class without annotations: not scored
    ]
    ids = [
        conn.execute(
            "INSERT INTO picks (picker_id, tomogram_id, class_id, x, y, z, score) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (picker, tid, *p),
        ).lastrowid
        for p in picks
    ]
    conn.close()
    # The false positive accepted becomes an annotation, but it does not score the picker
    # against itself: the numbers stay those of the three hand annotations.
    client.put(f"/api/picks/{ids[2]}", json={"status": "accepted"})
    url = f"/api/tomograms/{tid}/picks/evaluate"
    r = client.get(url, params={"picker": picker, "threshold": 0.5}).json()
    disc_scores = r["per_class"]["disc"]
    assert (disc_scores["n_true"], disc_scores["n_picked"]) == (3, 3)
    assert disc_scores["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert disc_scores["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert disc_scores["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["per_class"]["other"] is None
    assert r["overall"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    low = client.get(url, params={"threshold": 0.2}).json()  # default: the latest picker
    assert low["picker"] == picker
    assert low["per_class"]["disc"]["precision"] == pytest.approx(3 / 4, abs=1e-4)
    assert low["per_class"]["disc"]["recall"] == 1.0
    assert low["per_class"]["disc"]["f1"] == pytest.approx(6 / 7, abs=1e-4)
    # Accept by threshold per class: only "other" moves.
    acc = client.post(
        f"/api/tomograms/{tid}/picks/accept", json={"threshold": 0.0, "class": "other"}
    ).json()
    assert acc["accepted"] == 1
    assert client.get(url, params={"threshold": 0.5}).json()["per_class"]["other"] is None


def test_bad_requests(client, project, trained, tmp_path):
    with TestClient(create_app(tmp_path / "empty", run_jobs=False)) as empty:
        r = empty.post("/api/picker/train", json={})
        assert r.status_code == 400 and "no annotations" in r.json()["detail"]
        assert empty.post("/api/picker/predict", json={"picker": 1}).status_code == 404
    assert client.post("/api/picker/train", json={"classes": ["nope"]}).status_code == 400
    assert client.post("/api/picker/train", json={"tomograms": [999]}).status_code == 400
    assert client.post("/api/picker/train", json={"epochs": 0}).status_code == 422
    r = client.post("/api/picker/train", json={"init": trained["picker"], "classes": ["ring"]})
    assert r.status_code == 400 and "same classes" in r.json()["detail"]
    r = client.post("/api/picker/predict", json={"picker": trained["picker"], "tomograms": [999]})
    assert r.status_code == 400
    assert client.get("/api/tomograms/999/picks").status_code == 404


def test_cancel_a_running_train_job_leaves_no_ready_picker(client, project):
    r = client.post("/api/picker/train", json={**TINY, "epochs": 500})
    assert r.status_code == 201, r.text
    job_id, picker_id = r.json()["job"]["id"], r.json()["picker"]["id"]
    t0 = time.monotonic()
    while True:  # wait until it trains (an epoch is done)
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["losses"] or job["state"] not in ("queued", "running"):
            break
        assert time.monotonic() - t0 < 300, job
        time.sleep(0.3)
    assert job["state"] == "running" and job["eta_s"] is not None, job
    cancelled = client.post(f"/api/jobs/{job_id}/cancel").json()
    assert cancelled["state"] == "cancelled"
    time.sleep(1.0)
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
    picker = client.get(f"/api/pickers/{picker_id}").json()
    assert picker["status"] == "failed"
    assert not (project["dir"] / "pickers" / str(picker_id) / "model.pt").exists()
    r = client.post("/api/picker/predict", json={"picker": picker_id})
    assert r.status_code == 400 and "not ready" in r.json()["detail"]


def test_stopping_the_server_interrupts_a_train_job_that_resumes(client, project):
    runner = client.app.state.runner
    epochs = 4
    r = client.post("/api/picker/train", json={**TINY, "epochs": epochs})
    job_id, picker_id = r.json()["job"]["id"], r.json()["picker"]["id"]
    t0 = time.monotonic()
    while not client.get(f"/api/jobs/{job_id}").json()["losses"]:  # a checkpoint exists
        assert time.monotonic() - t0 < 300, "no epoch finished"
        time.sleep(0.2)
    runner.stop()  # what the server does when it stops (Ctrl-C)
    try:
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "interrupted", job
        assert client.get(f"/api/pickers/{picker_id}").json()["status"] == "failed"
    finally:
        runner.start()
    if not job["resumable"]:  # stopped after the last epoch but before the model was written
        pytest.skip("the job ended its last epoch before it was stopped")
    r = client.post(f"/api/jobs/{job_id}/resume")
    assert r.status_code == 201, r.text
    assert client.get(f"/api/pickers/{picker_id}").json()["status"] == "training"
    resumed = wait_job(client, r.json()["id"])
    assert resumed["state"] == "done", resumed["message"]
    picker = client.get(f"/api/pickers/{picker_id}").json()
    assert picker["status"] == "ready"
    # The run continues: metrics.csv holds every epoch once, the interrupted ones included.
    metrics = pd.read_csv(project["dir"] / "pickers" / str(picker_id) / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, epochs + 1))


def test_low_pass_is_recorded_and_a_fine_tuned_picker_keeps_its_parents(client, project):
    import torch

    def train(body) -> dict:
        r = client.post("/api/picker/train", json={**TINY, "epochs": 1, **body})
        assert r.status_code == 201, r.text
        job = wait_job(client, r.json()["job"]["id"])
        assert job["state"] == "done", job
        picker_id = r.json()["picker"]["id"]
        folder = project["dir"] / "pickers" / str(picker_id)
        norm = torch.load(folder / "model.pt", weights_only=True)["normalization"]
        return {"id": picker_id, "norm": norm}

    parent = train({"lowpass_A": 40.0})
    assert parent["norm"]["lowpass_sigma"] == pytest.approx(2.0)  # 40 Å at 20 Å per voxel
    assert parent["norm"]["lowpass_A"] == 40.0
    child = train({"init": parent["id"]})  # no low-pass asked: the parent's weights need it
    assert child["norm"]["lowpass_sigma"] == pytest.approx(2.0)
    assert client.get(f"/api/pickers/{child['id']}").json()["params"]["lowpass_A"] == 40.0
    r = client.post("/api/picker/train", json={**TINY, "lowpass_A": -1})
    assert r.status_code in (400, 422)
    # 200 Å is 10 voxels, wider than a quarter of the 32-voxel patch (pick train refuses it too)
    r = client.post("/api/picker/train", json={**TINY, "lowpass_A": 200.0})
    assert r.status_code == 400 and "quarter of the 32-voxel patch" in r.text, r.text
