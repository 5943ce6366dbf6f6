"""Pickers and their picks in the project database: train/predict requests, review, scores.

The HTTP routes (:mod:`cryoscout.app.picker_routes`) and the background jobs
(:mod:`cryoscout.app.picking_jobs`) both go through these functions; each write is one
transaction (:func:`cryoscout.app.db.transaction`). Coordinates are voxels ``(x, y, z)``
of the tomogram as mrcfile reads it (docs/app-api-tomograms.md).

A picker's ``status`` is read from its training job: ``training`` while the job is queued
or running, ``ready`` once it is done (its ``model.pt`` written), ``failed`` otherwise
(failed, cancelled or interrupted), so a cancelled run is never taken for a picker.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cryoscout.app import db
from cryoscout.app.project import Conflict, NotFound, Project
from cryoscout.app.tomograms import TomogramStore
from cryoscout.picking.lowpass import check_width

#: TBall-M label radius as a fraction of the particle radius (the README's CPU example:
#: particle radii 9 and 7 voxels, label radii 5 and 4).
LABEL_FRACTION = 0.6
#: Tomograms trained or picked together must agree on the voxel size to this fraction.
VOXEL_TOLERANCE = 0.05
#: A new pick inherits the accept/reject decision of an earlier pick of the same class
#: within this fraction of the particle radius.
SAME_PLACE = 0.5
#: Defaults of a picker training run (the README's CPU-sized example).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 40,
    "samples_per_epoch": 64,
    "seed": 0,
    "patch": 32,
    "channels": [8, 16, 24, 32],
    "batch_size": 4,
    "lr": 3e-3,
    "lowpass_A": 0.0,  # pick train --lowpass: Gaussian sigma in Å of the input, 0 = off
}
STATUSES = ("pending", "accepted", "rejected")


# -- tomograms and classes (read-only here) ---------------------------------------------
def store(project: Project) -> TomogramStore:
    """The project's tomograms, classes and annotations (:mod:`cryoscout.app.tomograms`)."""
    return TomogramStore(project)


def tomogram(project: Project, tomogram_id: int) -> sqlite3.Row:
    """The ``tomograms`` row, or :class:`NotFound`."""
    return store(project).record(tomogram_id)


def classes_by_name(project: Project) -> dict[str, sqlite3.Row]:
    rows = project.conn.execute("SELECT * FROM particle_classes ORDER BY id").fetchall()
    return {r["name"]: r for r in rows}


def annotation_table(
    project: Project,
    tomogram_id: int,
    class_ids: Sequence[int] | None = None,
    exclude_picker: int | None = None,
) -> pd.DataFrame:
    """A tomogram's annotations as ``id, class_id, x, y, z`` (voxels).

    ``exclude_picker`` leaves out the annotations made by accepting that picker's picks.
    """
    sql = "SELECT a.id, a.class_id, a.x, a.y, a.z FROM annotations a WHERE a.tomogram_id = ?"
    args: list[Any] = [int(tomogram_id)]
    if class_ids is not None:
        sql += f" AND a.class_id IN ({', '.join('?' * len(class_ids))})"
        args += [int(c) for c in class_ids]
    if exclude_picker is not None:
        sql += (
            " AND NOT (a.source = 'pick' AND a.pick_id IN "
            "(SELECT id FROM picks WHERE picker_id = ?))"
        )
        args.append(int(exclude_picker))
    rows = project.conn.execute(sql + " ORDER BY a.id", args).fetchall()
    return pd.DataFrame([dict(r) for r in rows], columns=["id", "class_id", "x", "y", "z"])


def label_radii(particle: dict[str, float]) -> dict[str, float]:
    """TBall-M label radius per class: :data:`LABEL_FRACTION` of the particle radius."""
    return {n: max(1.0, float(round(LABEL_FRACTION * r))) for n, r in particle.items()}


def _voxel_size(t: sqlite3.Row) -> float | None:
    v = t["voxel_size_A"]
    return float(v) if v is not None and v > 0 else None


def _same_voxel_size(rows: Sequence[sqlite3.Row], what: str) -> float | None:
    sizes = [_voxel_size(t) for t in rows]
    known = [s for s in sizes if s is not None]
    if known and (len(known) < len(sizes) or max(known) > min(known) * (1 + VOXEL_TOLERANCE)):
        listing = ", ".join(f"{t['name']}: {s} Å" for t, s in zip(rows, sizes, strict=True))
        raise ValueError(f"{what} must share one voxel size ({listing})")
    return known[0] if known else None


# -- pickers ----------------------------------------------------------------------------
def picker_row(project: Project, r: sqlite3.Row) -> dict[str, Any]:
    """The JSON of one picker (docs/app-api-tomograms.md)."""
    state = None
    if r["job_id"] is not None:
        j = project.conn.execute("SELECT state FROM jobs WHERE id = ?", (r["job_id"],)).fetchone()
        state = j["state"] if j else None
    status = {"queued": "training", "running": "training", "done": "ready"}.get(state, "failed")
    return {
        "id": r["id"],
        "name": r["name"],
        "job_id": r["job_id"],
        "created": r["created"],
        "classes": db.loads(r["classes"]) or [],
        "n_annotations": r["n_annotations"],
        "params": db.loads(r["params"]) or {},
        "metrics": db.loads(r["metrics"]),
        "status": status,
    }


def pickers(project: Project) -> list[dict[str, Any]]:
    rows = project.conn.execute("SELECT * FROM pickers ORDER BY id").fetchall()
    return [picker_row(project, r) for r in rows]


def picker(project: Project, picker_id: int) -> dict[str, Any]:
    r = project.conn.execute("SELECT * FROM pickers WHERE id = ?", (int(picker_id),)).fetchone()
    if r is None:
        raise NotFound(f"no picker {picker_id}")
    return picker_row(project, r)


def picker_dir(picker_id: int) -> str:
    """A picker's run folder, relative to the project: ``pickers/<id>``."""
    return f"pickers/{int(picker_id)}"


def request_training(project: Project, body: dict[str, Any]) -> tuple[dict, dict]:
    """Check a training request, register its picker and queue its ``pick_train`` job.

    Parameters
    ----------
    project
        The project.
    body
        ``tomograms`` (ids; default all with annotations), ``classes`` (names; default all
        annotated), ``init`` (a ready picker to fine-tune: its classes and architecture),
        and the options of :data:`TRAIN_DEFAULTS`.

    Returns
    -------
    (job, picker)

    Raises
    ------
    ValueError
        Nothing to train on (no annotations), an unknown class or tomogram, a class
        without a radius, tomograms of different voxel sizes, an ``init`` picker that
        is not ready or has other classes.
    """
    c = project.conn
    known = classes_by_name(project)
    opts = {k: body.get(k) if body.get(k) is not None else v for k, v in TRAIN_DEFAULTS.items()}
    ids = body.get("tomograms")
    if ids is None:
        ids = [r[0] for r in c.execute("SELECT DISTINCT tomogram_id FROM annotations ORDER BY 1")]
    tomos = _tomogram_rows(project, ids)
    names = body.get("classes")
    if names is None:
        marks = ", ".join("?" * len(ids))
        used = {
            r[0]
            for r in c.execute(
                f"SELECT DISTINCT class_id FROM annotations WHERE tomogram_id IN ({marks})", ids
            )
        }
        names = [n for n, r in known.items() if r["id"] in used]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no particle class {unknown[0]!r}")
    names = list(dict.fromkeys(names))
    class_ids = [int(known[n]["id"]) for n in names]
    counts = {n: 0 for n in names}
    used_tomos = []
    for t in tomos:
        table = annotation_table(project, t["id"], class_ids)
        for cid in table["class_id"]:
            counts[names[class_ids.index(int(cid))]] += 1
        if len(table):
            used_tomos.append(t)
    if not names or not used_tomos:
        raise ValueError("no annotations to train on: annotate particles first")
    voxel = _same_voxel_size(used_tomos, "the training tomograms")
    particle = {}
    for n in names:
        r = store(project).radius_vox(known[n], used_tomos[0]["id"])
        if r is None:
            raise ValueError(f"class {n!r} has no radius in voxels (give radius_vox or radius_A)")
        particle[n] = r
    if opts["patch"] < 2 ** len(opts["channels"]):
        raise ValueError(f"patch must be at least {2 ** len(opts['channels'])} voxels")
    init = body.get("init")
    if init is not None:
        parent = picker(project, init)
        if parent["status"] != "ready":
            raise ValueError(f"picker {init} is not ready, so it cannot be fine-tuned")
        if parent["classes"] != names:
            raise ValueError(
                f"picker {init} picks {', '.join(parent['classes'])}; train on the same "
                f"classes in the same order to fine-tune it"
            )
        # The architecture is the parent's (its weights must fit), and so is the input
        # filter (its weights learned filtered tomograms).
        opts["patch"] = parent["params"]["patch"]
        opts["channels"] = parent["params"]["channels"]
        opts["lowpass_A"] = float(parent["params"].get("lowpass_A", 0.0))
    if opts["lowpass_A"]:
        if not voxel:
            raise ValueError("a low-pass needs the tomograms' voxel size (their headers have none)")
        check_width(opts["lowpass_A"], voxel, opts["patch"])
    params = {
        **opts,
        "tomograms": [int(t["id"]) for t in used_tomos],
        "classes": names,
        "class_ids": class_ids,
        "particle_radius": particle,
        "label_radius": {
            n: max(1.0, float(round(LABEL_FRACTION * r))) for n, r in particle.items()
        },
        "voxel_size_A": voxel,
        "init": init,
    }
    with db.transaction(c) as tx:
        cur = tx.execute(
            "INSERT INTO pickers (name, created, classes, n_annotations, params) "
            "VALUES ('', ?, ?, ?, ?)",
            (db.now(), db.dumps(names), sum(counts.values()), db.dumps(params)),
        )
        pid = cur.lastrowid
        params["picker_id"] = pid
        params["run_dir"] = picker_dir(pid)
        job_id = project._create_job(tx, "pick_train", params)
        tx.execute(
            "UPDATE pickers SET name = ?, path = ?, job_id = ?, params = ? WHERE id = ?",
            (f"picker {pid}", params["run_dir"], job_id, db.dumps(params), pid),
        )
    return project.job(job_id), picker(project, pid)


def resume_training(project: Project, params: dict) -> dict:
    """Queue a ``pick_train`` job continuing an interrupted one (``params`` has ``resume``).

    The picker's status follows its newest training job, so it reads ``training`` again.
    """
    with db.transaction(project.conn) as tx:
        job_id = project._create_job(tx, "pick_train", params)
        tx.execute("UPDATE pickers SET job_id = ? WHERE id = ?", (job_id, params["picker_id"]))
    return project.job(job_id)


def request_prediction(
    project: Project, picker_id: int, tomogram_ids: Sequence[int] | None
) -> dict[str, Any]:
    """Check a prediction request and queue its ``pick_predict`` job.

    Raises
    ------
    NotFound
        No such picker.
    ValueError
        A picker that is not ready, an unknown tomogram, no tomogram, or a tomogram whose
        voxel size differs from the picker's training tomograms.
    """
    p = picker(project, picker_id)
    if p["status"] != "ready":
        raise ValueError(f"picker {picker_id} is not ready ({p['status']})")
    if tomogram_ids is None:
        tomogram_ids = [r[0] for r in project.conn.execute("SELECT id FROM tomograms ORDER BY id")]
    if not tomogram_ids:
        raise ValueError("no tomogram to pick: add one first")
    rows = _tomogram_rows(project, tomogram_ids)
    trained = p["params"].get("voxel_size_A")
    for t in rows:
        v = _voxel_size(t)
        if trained and v and abs(v - trained) > VOXEL_TOLERANCE * trained:
            raise ValueError(
                f"tomogram {t['name']} has voxels of {v} Å; picker {picker_id} was trained "
                f"on {trained} Å"
            )
    params = {"picker": int(picker_id), "tomograms": [int(t["id"]) for t in rows]}
    return project.create_job("pick_predict", params)


def finish_training(project: Project, picker_id: int, metrics: dict[str, Any]) -> None:
    with db.transaction(project.conn) as c:
        c.execute("UPDATE pickers SET metrics = ? WHERE id = ?", (db.dumps(metrics), picker_id))


# -- picks ------------------------------------------------------------------------------
def store_picks(
    project: Project,
    picker_id: int,
    tomogram_id: int,
    picks: pd.DataFrame,
    class_ids: dict[int, int],
    particle_radius: dict[int, float],
) -> int:
    """Replace a picker's picks on a tomogram, keeping decisions of picks at the same place.

    Parameters
    ----------
    picks
        ``class`` (the picker's 1-based class), ``x, y, z`` (voxels), ``score``.
    class_ids
        Picker class -> ``particle_classes.id``.
    particle_radius
        ``particle_classes.id`` -> particle radius in voxels: an earlier accepted or
        rejected pick within :data:`SAME_PLACE` of it takes the new pick's place and
        score and keeps its id, decision and annotation (one-to-one, nearest first).
        Accepted picks with no new pick there are kept, since they are annotations
        now; the other earlier picks are replaced.

    Returns
    -------
    int
        Number of new picks.
    """
    from cryoscout.picking.evaluate import match_one_to_one

    new = picks.assign(class_id=[class_ids[int(c)] for c in picks["class"]])
    with db.transaction(project.conn) as c:
        old = c.execute(
            "SELECT * FROM picks WHERE picker_id = ? AND tomogram_id = ?",
            (picker_id, tomogram_id),
        ).fetchall()
        decided = [dict(r) for r in old if r["status"] != "pending"]
        inherit: dict[int, dict] = {}  # row of `new` -> the decided pick it takes over
        kept: list[int] = []
        for cid in set(new["class_id"]) | {d["class_id"] for d in decided}:
            mine = np.flatnonzero(new["class_id"].to_numpy() == cid)
            before = [d for d in decided if d["class_id"] == cid]
            xyz_new = new.iloc[mine][["x", "y", "z"]].to_numpy(float).reshape(-1, 3)
            xyz_old = np.array([[d["x"], d["y"], d["z"]] for d in before], float).reshape(-1, 3)
            hits = match_one_to_one(xyz_new, xyz_old, SAME_PLACE * particle_radius.get(cid, 1.0))
            for a, b, _ in hits:
                inherit[int(mine[a])] = before[b]
            matched = {b for _, b, _ in hits}
            kept += [
                d["id"] for k, d in enumerate(before) if k in matched or d["status"] == "accepted"
            ]
        marks = ", ".join("?" * len(kept))
        c.execute(
            "DELETE FROM picks WHERE picker_id = ? AND tomogram_id = ?"
            + (f" AND id NOT IN ({marks})" if kept else ""),
            (picker_id, tomogram_id, *kept),
        )
        for i, r in enumerate(new.itertuples(index=False)):
            values = (float(r.x), float(r.y), float(r.z), float(r.score))
            if i in inherit:  # the decided pick moves to the new place and score, same id
                c.execute(
                    "UPDATE picks SET x = ?, y = ?, z = ?, score = ? WHERE id = ?",
                    (*values, inherit[i]["id"]),
                )
                continue
            c.execute(
                "INSERT INTO picks (picker_id, tomogram_id, class_id, x, y, z, score) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (picker_id, tomogram_id, int(r.class_id), *values),
            )
    return len(new)


def _default_picker(project: Project, tomogram_id: int, picker_id: int | None) -> int | None:
    if picker_id is not None:
        picker(project, picker_id)
        return int(picker_id)
    r = project.conn.execute(
        "SELECT MAX(picker_id) FROM picks WHERE tomogram_id = ?", (tomogram_id,)
    ).fetchone()
    return r[0]


def _pick_json(r: sqlite3.Row, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "class": names.get(r["class_id"]),
        "class_id": r["class_id"],
        "x": r["x"],
        "y": r["y"],
        "z": r["z"],
        "score": r["score"],
        "status": r["status"],
        "annotation_id": r["annotation_id"],
    }


def _class_names(project: Project) -> dict[int, str]:
    return {
        r["id"]: r["name"] for r in project.conn.execute("SELECT id, name FROM particle_classes")
    }


def tomogram_picks(project: Project, tomogram_id: int, picker_id: int | None) -> dict[str, Any]:
    """``{"picker": id | None, "picks": [...]}`` (highest score first)."""
    tomogram(project, tomogram_id)
    pid = _default_picker(project, tomogram_id, picker_id)
    rows = project.conn.execute(
        "SELECT * FROM picks WHERE tomogram_id = ? AND picker_id = ? ORDER BY score DESC, id",
        (tomogram_id, pid),
    ).fetchall()
    names = _class_names(project)
    return {"picker": pid, "picks": [_pick_json(r, names) for r in rows]}


def _pick(c: sqlite3.Connection, pick_id: int) -> sqlite3.Row:
    r = c.execute("SELECT * FROM picks WHERE id = ?", (int(pick_id),)).fetchone()
    if r is None:
        raise NotFound(f"no pick {pick_id}")
    return r


def _set_status(project: Project, c, p: sqlite3.Row, status: str, labeler: str) -> dict | None:
    """Move one pick to ``status`` inside transaction ``c``; returns its annotation or None.

    The annotation is added or removed by the tomogram store, with its event (undo).
    """
    tomos = store(project)
    ann_id = p["annotation_id"]
    exists = (
        ann_id is not None
        and c.execute("SELECT 1 FROM annotations WHERE id = ?", (ann_id,)).fetchone()
    )
    if status == "accepted":
        if not exists:
            name = c.execute(
                "SELECT name FROM particle_classes WHERE id = ?", (p["class_id"],)
            ).fetchone()[0]
            xyz = (p["x"], p["y"], p["z"])
            ann_id = tomos.insert_annotation(
                c, p["tomogram_id"], name, xyz, labeler, "pick", p["id"]
            )
    else:
        if exists:
            tomos.remove_annotation(c, ann_id, labeler)
        ann_id = None
    c.execute(
        "UPDATE picks SET status = ?, annotation_id = ? WHERE id = ?", (status, ann_id, p["id"])
    )
    return None if ann_id is None else tomos.annotation(ann_id)


def set_pick_status(project: Project, pick_id: int, status: str, labeler: str) -> dict[str, Any]:
    """Accept (adds an annotation, ``source = "pick"``), reject or reset one pick.

    Rejecting or resetting an accepted pick removes the annotation it made.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    with db.transaction(project.conn) as c:
        ann = _set_status(project, c, _pick(c, pick_id), status, labeler)
        p = _pick(c, pick_id)
    return {"pick": _pick_json(p, _class_names(project)), "annotation": ann}


def accept_above(
    project: Project,
    tomogram_id: int,
    threshold: float,
    picker_id: int | None = None,
    class_name: str | None = None,
    labeler: str = "user",
) -> dict[str, Any]:
    """Accept every pending pick at or above ``threshold`` -> ``{"accepted": n, "picker": id}``."""
    tomogram(project, tomogram_id)
    pid = _default_picker(project, tomogram_id, picker_id)
    sql = "SELECT * FROM picks WHERE tomogram_id = ? AND picker_id = ? AND status = 'pending' "
    sql += "AND score >= ?"
    args: list[Any] = [tomogram_id, pid, float(threshold)]
    if class_name is not None:
        known = classes_by_name(project)
        if class_name not in known:
            raise ValueError(f"no particle class {class_name!r}")
        sql += " AND class_id = ?"
        args.append(known[class_name]["id"])
    with db.transaction(project.conn) as c:
        rows = c.execute(sql, args).fetchall()
        for p in rows:
            _set_status(project, c, p, "accepted", labeler)
    return {"accepted": len(rows), "picker": pid}


def evaluate(
    project: Project, tomogram_id: int, picker_id: int | None, threshold: float
) -> dict[str, Any]:
    """One-to-one precision/recall/F1 of a picker's picks against the tomogram's annotations.

    The annotations made from this picker's own picks are left out (they would score the
    picker against itself). Picks at or above ``threshold`` count, whatever their review
    status. Hits lie within each class's particle radius (``pick evaluate``'s
    :func:`~cryoscout.picking.evaluate.evaluate_picks`). Classes without annotations get
    ``null`` and stay out of ``overall``.
    """
    from cryoscout.picking.evaluate import evaluate_picks

    t = tomogram(project, tomogram_id)
    pid = _default_picker(project, tomogram_id, picker_id)
    if pid is None:
        raise Conflict(f"tomogram {tomogram_id} has no picks yet")
    known = classes_by_name(project)
    by_id = {int(r["id"]): r for r in known.values()}
    picks = pd.DataFrame(
        [
            dict(r)
            for r in project.conn.execute(
                "SELECT class_id, x, y, z, score FROM picks WHERE tomogram_id = ? "
                "AND picker_id = ? AND score >= ?",
                (tomogram_id, pid, float(threshold)),
            )
        ],
        columns=["class_id", "x", "y", "z", "score"],
    )
    truth = annotation_table(project, tomogram_id, exclude_picker=pid)
    classes = list(dict.fromkeys([*picker(project, pid)["classes"]]))
    class_ids = [int(known[n]["id"]) for n in classes if n in known]
    class_ids += sorted(set(truth["class_id"]) - set(class_ids))
    annotated = sorted(set(truth["class_id"]))
    per_class: dict[str, Any] = {by_id[c]["name"]: None for c in class_ids}
    overall = None
    if annotated:
        radius = {}
        for c in annotated:
            r = store(project).radius_vox(by_id[c], t["id"])
            if r is None:
                raise ValueError(f"class {by_id[c]['name']!r} has no radius in voxels")
            radius[c] = r
        p = picks[picks["class_id"].isin(annotated)].rename(columns={"class_id": "class"})
        result = evaluate_picks(p, truth.rename(columns={"class_id": "class"}), radius)
        for c, row in result.per_class.iterrows():
            per_class[by_id[int(c)]["name"]] = _scores(row)
        overall = _scores(result.overall)
    return {
        "threshold": float(threshold),
        "picker": pid,
        "per_class": per_class,
        "overall": overall,
    }


def _scores(row) -> dict[str, Any]:
    tp, fp, fn = int(row["tp"]), int(row["fp"]), int(row["fn"])

    def num(v) -> float | None:
        v = float(v)
        return round(v, 4) if math.isfinite(v) else None

    return {
        "precision": num(row["precision"]),
        "recall": num(row["recall"]),
        "f1": num(row["f1"]),
        "n_true": tp + fn,
        "n_picked": tp + fp,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _tomogram_rows(project: Project, ids: Sequence[int]) -> list[sqlite3.Row]:
    """The rows of tomograms ``ids``; an unknown id is a bad request (ValueError)."""
    rows = []
    for i in ids:
        try:
            rows.append(tomogram(project, i))
        except NotFound:
            raise ValueError(f"no tomogram {i}") from None
    return rows
