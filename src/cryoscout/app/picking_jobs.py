"""The app's picking jobs: ``pick_train`` and ``pick_predict``.

They run in the worker process (:mod:`cryoscout.app.worker`), report progress through
the job's :class:`~cryoscout.app.operations.Reporter`, and call the code of the command
line: ``cryoscout pick train``'s :func:`cryoscout.picking.train.train_picker` and
``cryoscout pick predict``'s :func:`cryoscout.picking.batch.pick_tomogram` (tiled, one
progress step per tile). A picker's run folder is ``PROJECT/pickers/<id>/`` (``model.pt``,
``metrics.csv``, ``config.yaml``, ``checkpoints/``; ``picks/`` holds the CSV of each
prediction).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cryoscout.app import db, pickers
from cryoscout.app.project import Project

if TYPE_CHECKING:
    from cryoscout.app.operations import Reporter
    from cryoscout.picking.batch import TomogramJob


def tomogram_job(t: sqlite3.Row) -> TomogramJob:
    """A ``tomograms`` row as ``pick predict`` takes a tomogram (MRC file or copick run)."""
    from cryoscout.io.validate import safe_filename
    from cryoscout.picking.batch import TomogramJob

    copick = None
    if t["source"] == "copick":
        from cryoscout.io.copick_project import CopickTomogram

        copick = CopickTomogram(
            Path(t["copick_config"]),
            t["copick_run"],
            float(t["voxel_size_A"]),
            t["copick_tomo_type"],
            (int(t["nz"]), int(t["ny"]), int(t["nx"])),
        )
    path = Path(t["copick_config"] if copick else t["path"])
    return TomogramJob(
        path,
        safe_filename(f"{t['id']}_{t['name']}"),  # pick files are named by it: unique
        (int(t["nz"]), int(t["ny"]), int(t["nx"])),
        pickers._voxel_size(t),
        copick,
    )


def run_pick_train(project: Project, job: dict, report: Reporter) -> dict:
    """Job ``pick_train``: train the picker registered with the job on the annotations.

    The annotations are read when the job starts; each tomogram's classes become the
    picker's classes 1..n in the order of the request.
    """
    from cryoscout.io.runfolder import resumable_run_folder
    from cryoscout.picking.module import TrainConfig
    from cryoscout.picking.train import train_picker

    p = job["params"]
    picker_id = int(p["picker_id"])
    run_dir = project.path / p["run_dir"]
    names, class_ids = list(p["classes"]), [int(c) for c in p["class_ids"]]
    number = {cid: k + 1 for k, cid in enumerate(class_ids)}
    report(0.01, "reading annotations", force=True)
    volumes, tables, used = [], [], []
    for tid in p["tomograms"]:
        table = pickers.annotation_table(project, tid, class_ids)
        if len(table) == 0:
            continue
        volumes.append(pickers.store(project).volume(tid))
        tables.append(
            pd.DataFrame(
                {
                    "class": table["class_id"].map(number).astype(int),
                    "x": table["x"],
                    "y": table["y"],
                    "z": table["z"],
                }
            )
        )
        used.append(int(tid))
    n = int(sum(len(t) for t in tables))
    if n == 0:
        raise ValueError("no annotations to train on: annotate particles first")
    with db.transaction(project.conn) as c:
        c.execute("UPDATE pickers SET n_annotations = ? WHERE id = ?", (n, picker_id))
    epochs = int(p["epochs"])
    config = TrainConfig(
        channels=tuple(int(c) for c in p["channels"]),
        patch_size=int(p["patch"]),
        epochs=epochs,
        batch_size=int(p["batch_size"]),
        samples_per_epoch=int(p["samples_per_epoch"]),
        lr=float(p["lr"]),
        seed=int(p["seed"]),
        accelerator="auto",
        devices=1,
    )
    init = None
    if p.get("init") is not None:
        from cryoscout.picking.weights import load_model

        parent = pickers.picker(project, p["init"])
        net, _ = load_model(project.path / parent["params"]["run_dir"])
        init = net.state_dict()

    def on_epoch(history: pd.DataFrame) -> None:
        row = history.iloc[-1]
        e = int(row["epoch"])
        report.losses.append(
            {"epoch": e, "train_loss": float(row["train_loss"]), "lr": float(row["lr"])}
        )
        report(
            0.05 + 0.9 * e / epochs,
            f"epoch {e}/{epochs}: loss {row['train_loss']:.4f}",
            force=True,
        )

    report(0.05, f"training on {n} annotations ({', '.join(names)})", force=True)
    resume = project.path / p["resume"] if p.get("resume") else None
    with resumable_run_folder(run_dir, resume=resume is not None):
        result = train_picker(
            volumes,
            tables,
            names,
            {k + 1: float(p["label_radius"][name]) for k, name in enumerate(names)},
            config,
            run_dir,
            particle_radius={k + 1: float(p["particle_radius"][n]) for k, n in enumerate(names)},
            voxel_size_A=p.get("voxel_size_A"),
            lowpass_A=float(p.get("lowpass_A", 0.0)),
            on_epoch=on_epoch,
            init=init,
            resume=resume,
            inputs={"app_picker": picker_id, "tomogram_ids": used, "init_picker": p.get("init")},
        )
    metrics = {
        "final_train_loss": round(float(result.history["train_loss"].iloc[-1]), 5),
        "epochs": len(result.history),
        "seconds": float(result.history["elapsed_s"].iloc[-1]),
        "n_annotations": n,
    }
    pickers.finish_training(project, picker_id, metrics)
    return {"picker": picker_id, "model": f"{p['run_dir']}/model.pt", **metrics}


def run_pick_predict(project: Project, job: dict, report: Reporter) -> dict:
    """Job ``pick_predict``: pick the tomograms with a picker, tile by tile, into ``picks``."""
    from cryoscout.picking import batch
    from cryoscout.picking.weights import load_model

    p = job["params"]
    picker_id = int(p["picker"])
    row = pickers.picker(project, picker_id)
    folder = project.path / pickers.picker_dir(picker_id)
    report(0.01, f"loading picker {picker_id}", force=True)
    net, info = load_model(folder)
    settings = batch.default_settings(net, info, formats=("csv",), copick_picks=None)
    known = pickers.classes_by_name(project)
    missing = [n for n in info.class_names if n not in known]
    if missing:
        raise ValueError(f"picker {picker_id} picks {missing[0]!r}, which is no longer a class")
    class_ids = {k + 1: int(known[n]["id"]) for k, n in enumerate(info.class_names)}
    radius = {class_ids[k]: float(r) for k, r in settings.particle_radius.items()}
    out_dir = folder / "picks"
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [int(t) for t in p["tomograms"]]
    counts: dict[str, int] = {}
    for k, tid in enumerate(ids):
        t = pickers.tomogram(project, tid)
        name = t["name"]

        def on_tile(done: int, total: int, k: int = k, name: str = name) -> None:
            report((k + 0.9 * done / total) / len(ids), f"{name}: tile {done}/{total}")

        report(k / len(ids), f"{name}: segmenting", force=True)
        picks = batch.pick_tomogram(net, info, tomogram_job(t), out_dir, settings, on_tile=on_tile)
        report((k + 0.95) / len(ids), f"{name}: storing {len(picks)} picks", force=True)
        counts[name] = pickers.store_picks(project, picker_id, tid, picks, class_ids, radius)
    return {"picker": picker_id, "picks": counts, "classes": row["classes"]}
