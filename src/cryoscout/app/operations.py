"""The app's background operations: screen an atlas, train a model version, rescore.

They run in the worker process (:mod:`cryoscout.app.worker`), report progress
through a :class:`Reporter`, and call the same code as the command line:
``cryoscout extract``'s writer, ``cryoscout screen``'s ``screen_extraction``
and ``cryoscout train``'s ``train_run``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryoscout.app import picking_jobs
from cryoscout.app.project import Project
from cryoscout.screening.model import SCORES


class Cancelled(Exception):
    """The job was cancelled from the page."""


class Reporter:
    """Writes a job's progress, estimate, message and losses to the database.

    Writes are throttled (at most ~4 per second) except the final ones.
    """

    def __init__(self, project: Project, job_id: int) -> None:
        self.project = project
        self.job_id = job_id
        self.t0 = time.monotonic()
        self._last = 0.0
        self.losses: list[dict] = []

    def __call__(self, progress: float, message: str | None = None, force: bool = False) -> None:
        t = time.monotonic()
        if not force and t - self._last < 0.25:
            return
        self._last = t
        progress = float(min(max(progress, 0.0), 1.0))
        elapsed = t - self.t0
        eta = elapsed * (1 - progress) / progress if progress > 0.02 else None
        fields: dict[str, Any] = {"progress": progress, "eta_s": eta}
        if message is not None:
            fields["message"] = message
        if self.losses:
            fields["losses"] = self.losses[-500:]
        self.project.update_job(self.job_id, **fields)
        if self.project.job(self.job_id)["state"] == "cancelled":
            raise Cancelled()


class _Fixed:
    """A model whose ``predict`` returns scores computed earlier (so squares are scored once)."""

    def __init__(self, predictions) -> None:
        self.predictions = predictions

    def predict(self, stack):
        return self.predictions


def score_atlas(
    project: Project, atlas_id: int, model_id: int, report: Callable[..., None]
) -> dict:
    """Screen one atlas with one model version into ``atlases/<id>/m<model>/``.

    The first time, the squares are extracted and written as the atlas's
    extraction folder (``cryoscout extract``'s format); later versions read
    them back, so square IDs (and the labels on them) never change.
    """
    from cryoscout.app import sprites
    from cryoscout.atlas.extract import extract_squares
    from cryoscout.atlas.stitch import stitch
    from cryoscout.io.atlas_reader import open_atlas
    from cryoscout.io.atomic import write_bytes
    from cryoscout.io.squares import read_extraction, write_extraction
    from cryoscout.screening.active import analyse
    from cryoscout.screening.predict import load_model
    from cryoscout.screening.screen import screen_extraction

    a = project._atlas_record(atlas_id)
    source_model = project.model_source(model_id)
    report(0.02, "loading the model")
    model = load_model(source_model)
    report(0.05, f"reading {Path(a['path']).name}")
    source = open_atlas(a["path"])
    report(0.15, f"stitching {len(source.tiles)} tiles")
    montage = stitch(source)
    ext_dir = project.extraction_dir(atlas_id)
    first = not (ext_dir / "squares.csv").is_file()
    if first:
        report(0.35, "finding and extracting grid squares")
        extraction = extract_squares(montage, size=model.size)
        if len(extraction.table) == 0:
            from cryoscout.errors import InputError

            raise InputError(a["path"], "no grid squares found, so there is nothing to screen")
        write_extraction(ext_dir, extraction, known_squares=source.known_squares)
        lattice = extraction.lattice
        square_px = float(lattice.pitch_px * extraction.fov * extraction.opening_px) / float(
            extraction.stack.shape[-1]
        )
    data = read_extraction(ext_dir)
    report(0.5, f"scoring {len(data.table)} squares (and their uncertainty)")
    analysis = analyse(model, data.stack)
    out = project.screen_dir(atlas_id, model_id)
    report(0.75, "writing scores, targets and report")
    config = {
        "input": a["path"],
        "format": source.format,
        "model": source_model or "default",
        "model_version": model_id,
        "top_k": 20,
        "size": model.size,
    }
    result = screen_extraction(
        data,
        montage,
        _Fixed(analysis.predictions),
        out,
        top_k=20,
        input_path=a["path"],
        model_name=f"{model.kind} (app model version {model_id})",
        config=config,
    )
    np.save(out / "features.npy", analysis.features)
    np.save(out / "uncertainty.npy", analysis.uncertainty.astype(np.float32))
    for name, maps in analysis.predictions.attention.items():
        sheet = sprites.overlay_sheet(maps, sprites.OVERLAY_COLOURS.get(name, (255, 0, 0)))
        write_bytes(out / f"{name}.png", sprites.png_bytes(sheet))
        # Full-size maps as uint8 for the detail view (memory-mapped, one square at a time).
        np.save(out / f"{name}.npy", (np.clip(maps, 0, 1) * 255).astype(np.uint8))
    folder = project.atlas_dir(atlas_id)
    atlas_fields: dict[str, Any] = {}
    if first:
        report(0.9, "drawing the overview and sprite sheets")
        grey, scale = sprites.downscaled(montage.image, sprites.OVERVIEW_MAX)
        write_bytes(folder / "overview.png", sprites.png_bytes(grey))
        thumb, _ = sprites.downscaled(montage.image, sprites.THUMBNAIL_MAX)
        write_bytes(folder / "thumbnail.png", sprites.png_bytes(thumb))
        write_bytes(folder / "crop.png", sprites.png_bytes(sprites.crop_sheet(data.stack)))
        atlas_fields = dict(
            square_px=square_px,
            overview_w=grey.shape[1],
            overview_h=grey.shape[0],
            overview_scale=scale,
            sprite_size=sprites.SPRITE_SIZE,
            sprite_cols=sprites.sprite_cols(len(data.table)),
            has_stage=int(montage.px_to_stage is not None),
            lattice_angle_deg=float(lattice.angle_deg),
        )
    _store(project, atlas_id, model_id, result.scores, analysis.uncertainty, first, atlas_fields)
    return {"squares": len(result.scores), "folder": str(out.relative_to(project.path))}


def _store(project, atlas_id, model_id, scores, uncertainty, first, atlas_fields) -> None:
    """Squares (first time) and this model's predictions into the database, in one transaction."""
    from cryoscout.app import db

    with db.transaction(project.conn) as c:
        if first:
            c.execute("DELETE FROM squares WHERE atlas_id = ?", (atlas_id,))
            c.executemany(
                "INSERT INTO squares (atlas_id, square_id, idx, x_px, y_px, full, stage_x_um, "
                "stage_y_um) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        atlas_id,
                        int(r.square_id),
                        i,
                        float(r.x_px),
                        float(r.y_px),
                        int(getattr(r, "full", 1)),
                        _float(getattr(r, "stage_x_um", None)),
                        _float(getattr(r, "stage_y_um", None)),
                    )
                    for i, r in enumerate(scores.itertuples(index=False))
                ],
            )
            cols = ", ".join(f"{k} = ?" for k in atlas_fields)
            c.execute(f"UPDATE atlases SET {cols} WHERE id = ?", (*atlas_fields.values(), atlas_id))
        c.execute(
            "DELETE FROM predictions WHERE model_id = ? AND atlas_id = ?", (model_id, atlas_id)
        )
        c.executemany(
            "INSERT INTO predictions (model_id, atlas_id, square_id, brightness, squareness, "
            "cracking, contamination, overall, uncertainty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (model_id, atlas_id, int(sid), *map(float, vals), float(u))
                for sid, vals, u in zip(
                    scores["square_id"], scores[list(SCORES)].to_numpy(), uncertainty, strict=True
                )
            ],
        )


def _float(v) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


def run_screen(project: Project, job: dict, report: Reporter) -> dict:
    """Job ``screen``: screen a newly added atlas with the current model."""
    atlas_id = job["params"]["atlas_id"]
    project.set_atlas(atlas_id, status="screening", message=None)
    try:
        result = score_atlas(project, atlas_id, project.current_model, report)
    except Cancelled:
        project.set_atlas(atlas_id, status="failed", message="screening cancelled")
        raise
    except Exception as exc:
        project.set_atlas(atlas_id, status="failed", message=_message(exc))
        raise
    project.set_atlas(atlas_id, status="ready", message=None)
    return result


def run_rescore(project: Project, job: dict, report: Reporter) -> dict:
    """Job ``rescore``: score every ready atlas not yet scored by a model version."""
    model_id = job["params"]["model_id"]
    todo = project._unscored(project.conn, model_id)
    for k, atlas_id in enumerate(todo):

        def sub(p, message=None, force=False, k=k):
            report((k + p) / len(todo), f"atlas {k + 1}/{len(todo)}: {message or ''}", force)

        score_atlas(project, atlas_id, model_id, sub)
    return {"atlases": len(todo), "model_id": model_id}


def run_train(project: Project, job: dict, report: Reporter) -> dict:
    """Job ``train``: fine-tune the current model on the project's labels (``cryoscout train``).

    Registers the new version with its held-out error before and after, makes it
    current and queues the rescoring of every atlas.
    """
    import pytorch_lightning as pl

    from cryoscout.app import db
    from cryoscout.screening.module import train_run

    p = job["params"]
    parent = project.fine_tune_parent(p.get("parent", project.current_model))
    run_dir = project.path / p["run_dir"]
    report(0.01, "exporting labels", force=True)
    folders = project.write_training_labels()
    if not folders:
        raise RuntimeError("no screened atlas to train on")
    epochs = int(p.get("epochs", 5))

    class Progress(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            nb = max(1, trainer.num_training_batches)
            done = trainer.current_epoch * nb + batch_idx + 1
            report(
                0.05 + 0.85 * done / (epochs * nb), f"epoch {trainer.current_epoch + 1}/{epochs}"
            )

        def on_train_epoch_end(self, trainer, module):
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            report.losses.append({"epoch": trainer.current_epoch, **m})
            report(
                0.05 + 0.85 * (trainer.current_epoch + 1) / epochs,
                f"epoch {trainer.current_epoch + 1}/{epochs} done",
                force=True,
            )

    resume = p.get("resume")
    source = project.model_source(parent)
    record = train_run(
        folders,
        run_dir,
        n_labeled=-1,
        n_unlabeled=int(p.get("unlabeled", 200)),
        epochs=epochs,
        seed=int(p.get("seed", 0)),
        batch_size=int(p.get("batch_size", 32)),
        lr=float(p.get("lr", 3e-4)),
        test_fraction=float(p.get("test_fraction", 0.2)),
        accelerator="cpu",
        devices=1,
        resume=project.path / resume if resume else None,
        init=source or "default",
        callbacks=[Progress()],
    )
    report(0.95, "registering the new model version", force=True)
    with db.transaction(project.conn) as c:
        cur = c.execute(
            "INSERT INTO models (name, path, parent, created, job_id, n_labeled, n_unlabeled, "
            "n_test, error_before, error_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f"fine-tuned #{job['id']}",
                str(run_dir),
                parent,
                db.now(),
                job["id"],
                record["n_labeled"],
                record["n_unlabeled"],
                record["n_test"],
                db.dumps(_rounded(record.get("test_mean_abs_diff_before"))),
                db.dumps(_rounded(record["test_mean_abs_diff"])),
            ),
        )
        model_id = cur.lastrowid
    project.activate(model_id)
    return {
        "model_id": model_id,
        "n_labeled": record["n_labeled"],
        "n_unlabeled": record["n_unlabeled"],
        "n_test": record["n_test"],
        "error_before": _rounded(record.get("test_mean_abs_diff_before")),
        "error_after": _rounded(record["test_mean_abs_diff"]),
    }


def _rounded(d: dict | None) -> dict | None:
    """Errors per score, rounded; ``None`` for a score without held-out labels (NaN)."""
    if d is None:
        return None
    return {k: round(float(v), 4) if np.isfinite(v) else None for k, v in d.items()}


def _message(exc: BaseException) -> str:
    """One line for the page: what went wrong, without a traceback."""
    return str(exc) if str(exc) else type(exc).__name__


OPERATIONS: dict[str, Callable[[Project, dict, Reporter], dict]] = {
    "screen": run_screen,
    "train": run_train,
    "rescore": run_rescore,
    "pick_train": picking_jobs.run_pick_train,
    "pick_predict": picking_jobs.run_pick_predict,
}
