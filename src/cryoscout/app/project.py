"""A project: a folder with the database and everything the app wrote for it.

Layout::

    PROJECT/cryoscout.db           the database (see :mod:`cryoscout.app.db`)
    PROJECT/atlases/<id>/squares/  extraction folder (squares.csv, squares.mrcs,
                                   labels.csv written before training)
    PROJECT/atlases/<id>/m<model>/ the `cryoscout screen` folder of that atlas with that
                                   model (+ features.npy, uncertainty.npy, attention sprites)
    PROJECT/atlases/<id>/overview.png, thumbnail.png, crop.png
    PROJECT/models/<id>/           `cryoscout train` run folders (model.pt, checkpoints/, ...)

:class:`Project` is the one place that reads and writes the database; the
server's routes and the background operations both go through it.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoscout.app import db
from cryoscout.errors import InputError
from cryoscout.screening.model import SCORES

DB_NAME = "cryoscout.db"
DEFAULT_MODEL_ID = 1
#: The gradient-boosted-trees baseline, a model version every project offers
#: (``load_model("baseline")``): scores without attention maps, and no network to fine-tune.
BASELINE_PATH = "baseline"
BASELINE_NAME = "trees baseline"
#: Labels are integers on this scale.
LABEL_RANGE = (0, 4)


class NotFound(LookupError):
    """An id or file that does not exist (HTTP 404)."""


class Conflict(RuntimeError):
    """A request that the current state does not allow (HTTP 409)."""


@dataclass
class Suggestion:
    atlas_id: int
    square_id: int
    rank: int
    uncertainty: float
    distance: float


class Project:
    """Open (creating if needed) the project in ``path``.

    Parameters
    ----------
    path
        The project folder.
    data_roots
        Folders atlases may be added from, besides the project folder.
    """

    def __init__(self, path: str | os.PathLike, data_roots: list[str | os.PathLike] | None = None):
        self.path = Path(path).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self.data_roots = [self.path, *(Path(r).resolve() for r in (data_roots or []))]
        self._local = threading.local()
        self._suggest_cache: dict[tuple, Any] = {}
        conn = self.conn
        with db.transaction(conn):
            if db.get_meta(conn, "schema_version") is None:
                db.set_meta(conn, "schema_version", db.SCHEMA_VERSION)
                db.set_meta(conn, "name", self.path.name)
                db.set_meta(conn, "current_model", DEFAULT_MODEL_ID)
                conn.execute(
                    "INSERT INTO models (id, name, path, created) VALUES (?, 'default', NULL, ?)",
                    (DEFAULT_MODEL_ID, db.now()),
                )
            # Projects made before the baseline was offered get it on opening.
            if not conn.execute("SELECT 1 FROM models WHERE path = ?", (BASELINE_PATH,)).fetchone():
                conn.execute(
                    "INSERT INTO models (name, path, created) VALUES (?, ?, ?)",
                    (BASELINE_NAME, BASELINE_PATH, db.now()),
                )

    # -- database ---------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared between threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = db.connect(self.path / DB_NAME)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @property
    def name(self) -> str:
        return db.get_meta(self.conn, "name", self.path.name)

    @property
    def current_model(self) -> int:
        return int(db.get_meta(self.conn, "current_model", DEFAULT_MODEL_ID))

    def info(self) -> dict[str, Any]:
        c = self.conn
        n_sq = c.execute("SELECT COUNT(*) FROM squares").fetchone()[0]
        n_lab = c.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT atlas_id, square_id FROM current_labels)"
        ).fetchone()[0]
        return {
            "name": self.name,
            "path": str(self.path),
            "atlases": c.execute("SELECT COUNT(*) FROM atlases").fetchone()[0],
            "squares": n_sq,
            "labeled_squares": n_lab,
            "labels": c.execute("SELECT COUNT(*) FROM current_labels").fetchone()[0],
            "current_model": self.current_model,
            "models": self.models(),
            "attributes": list(SCORES),
            "labeler": _user(),
        }

    # -- files --------------------------------------------------------------------------
    def atlas_dir(self, atlas_id: int) -> Path:
        return self.path / "atlases" / str(int(atlas_id))

    def extraction_dir(self, atlas_id: int) -> Path:
        return self.atlas_dir(atlas_id) / "squares"

    def screen_dir(self, atlas_id: int, model_id: int) -> Path:
        return self.atlas_dir(atlas_id) / f"m{int(model_id)}"

    def model_dir(self, model_id: int) -> Path:
        return self.path / "models" / str(int(model_id))

    def project_file(self, relative: str | os.PathLike) -> Path:
        """A file inside the project folder; anything resolving outside it is refused."""
        p = (self.path / relative).resolve()
        if not p.is_relative_to(self.path):
            raise PermissionError(f"{relative}: outside the project folder")
        if not p.is_file():
            raise NotFound(f"{relative}: no such file")
        return p

    def check_input_path(self, path: str) -> Path:
        """Resolve an atlas path a user typed; it must exist inside the project or a data root."""
        if not path or "\x00" in path:
            raise InputError(path, "empty or invalid path")
        p = Path(path).expanduser()
        p = (p if p.is_absolute() else self.path / p).resolve()
        if not any(p.is_relative_to(root) for root in self.data_roots):
            roots = ", ".join(str(r) for r in self.data_roots)
            raise InputError(path, f"outside the folders the app may read ({roots})")
        if not p.exists():
            raise InputError(path, "no such file or folder")
        return p

    # -- atlases ------------------------------------------------------------------------
    def add_atlas(self, path: str, name: str | None = None) -> tuple[dict, dict]:
        """Register an atlas and queue its screening job; returns ``(atlas row, job)``."""
        p = self.check_input_path(path)
        label = name or (p.parent.name if p.is_file() else p.name) or p.name
        with db.transaction(self.conn) as c:
            cur = c.execute(
                "INSERT INTO atlases (name, path, folder, status, created) "
                "VALUES (?, ?, '', 'queued', ?)",
                (label, str(p), db.now()),
            )
            atlas_id = cur.lastrowid
            c.execute(
                "UPDATE atlases SET folder = ? WHERE id = ?",
                (str(self.atlas_dir(atlas_id).relative_to(self.path)), atlas_id),
            )
            job_id = self._create_job(c, "screen", {"atlas_id": atlas_id})
            c.execute("UPDATE atlases SET job_id = ? WHERE id = ?", (job_id, atlas_id))
        return self.atlas(atlas_id), self.job(job_id)

    def atlas_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM atlases ORDER BY id")]

    def atlases(self) -> list[dict]:
        """The cassette table: one row per atlas with counts under the current model."""
        model = self.current_model
        stats = {
            r["atlas_id"]: r
            for r in self.conn.execute(
                "SELECT s.atlas_id, COUNT(*) n, SUM(s.full) n_full, "
                "SUM(CASE WHEN s.full = 1 AND p.overall >= 3 THEN 1 ELSE 0 END) n_good "
                "FROM squares s LEFT JOIN predictions p ON p.model_id = ? "
                "AND p.atlas_id = s.atlas_id AND p.square_id = s.square_id GROUP BY s.atlas_id",
                (model,),
            )
        }
        labeled = dict(
            self.conn.execute(
                "SELECT atlas_id, COUNT(DISTINCT square_id) FROM current_labels GROUP BY atlas_id"
            ).fetchall()
        )
        rows = []
        for a in self.conn.execute("SELECT * FROM atlases ORDER BY id"):
            rows.append(self._atlas_row(a, stats.get(a["id"]), labeled.get(a["id"], 0), model))
        return rows

    def atlas(self, atlas_id: int) -> dict:
        a = self._atlas_record(atlas_id)
        rows = [r for r in self.atlases() if r["id"] == a["id"]]
        row = rows[0]
        if a["status"] == "ready":
            row["overview"] = {
                "url": f"/api/atlases/{a['id']}/overview.png",
                "width": a["overview_w"],
                "height": a["overview_h"],
                "scale": a["overview_scale"],
            }
            row["square_px"] = a["square_px"]
            row["opening_px"] = a["square_px"]
            row["lattice_angle_deg"] = a["lattice_angle_deg"]
            row["has_stage"] = bool(a["has_stage"])
            row["sprites"] = self._sprites(a, self.current_model)
        return row

    def _atlas_record(self, atlas_id: int) -> sqlite3.Row:
        a = self.conn.execute("SELECT * FROM atlases WHERE id = ?", (int(atlas_id),)).fetchone()
        if a is None:
            raise NotFound(f"no atlas {atlas_id}")
        return a

    def _atlas_row(self, a, stats, n_labeled: int, model: int) -> dict:
        ready = a["status"] == "ready"
        median = None
        if ready:
            vals = [
                r[0]
                for r in self.conn.execute(
                    "SELECT p.overall FROM predictions p JOIN squares s ON s.atlas_id = p.atlas_id "
                    "AND s.square_id = p.square_id WHERE p.model_id = ? AND p.atlas_id = ? "
                    "AND s.full = 1",
                    (model, a["id"]),
                )
                if r[0] is not None
            ]
            median = round(float(np.median(vals)), 3) if vals else None
        return {
            "id": a["id"],
            "name": a["name"],
            "path": a["path"],
            "status": a["status"],
            "message": a["message"],
            "job_id": a["job_id"],
            "n_squares": stats["n"] if ready and stats else None,
            "n_full": int(stats["n_full"] or 0) if ready and stats else None,
            "n_good": int(stats["n_good"] or 0) if ready and stats else None,
            "median_overall": median,
            "n_labeled": n_labeled,
            "thumbnail_url": f"/api/atlases/{a['id']}/thumbnail.png" if ready else None,
        }

    def _sprites(self, a, model: int) -> dict:
        """Sprite sheets of an atlas; attention overlays only where the model drew them."""
        base = f"/api/atlases/{a['id']}/sprites"
        n = self.conn.execute(
            "SELECT COUNT(*) FROM squares WHERE atlas_id = ?", (a["id"],)
        ).fetchone()[0]
        out = {"size": a["sprite_size"], "cols": a["sprite_cols"], "count": n}
        out["crop"] = f"{base}/crop.png"
        if self.model(model)["path"] != BASELINE_PATH:  # the baseline has no attention
            for kind in ("cracking", "contamination"):
                out[kind] = f"{base}/{kind}.png?model={model}"
        return out

    def squares(self, atlas_id: int, model_id: int | None = None) -> dict:
        """Every square of an atlas with scores, uncertainty, labels, suggestion rank, target."""
        a = self._atlas_record(atlas_id)
        model = self.current_model if model_id is None else int(model_id)
        rows = self.conn.execute(
            "SELECT s.*, p.brightness, p.squareness, p.cracking, p.contamination, p.overall, "
            "p.uncertainty FROM squares s LEFT JOIN predictions p ON p.model_id = ? "
            "AND p.atlas_id = s.atlas_id AND p.square_id = s.square_id "
            "WHERE s.atlas_id = ? ORDER BY s.idx",
            (model, a["id"]),
        ).fetchall()
        labels: dict[int, dict[str, int]] = {}
        for r in self.conn.execute(
            "SELECT square_id, attribute, value FROM current_labels WHERE atlas_id = ?", (a["id"],)
        ):
            labels.setdefault(r["square_id"], {})[r["attribute"]] = r["value"]
        ranks = {
            s.square_id: s.rank
            for s in self.suggestions(n=50, model_id=model)
            if s.atlas_id == a["id"]
        }
        targets = set()
        if a["status"] == "ready":
            try:
                targets = set(self.targets(a["id"], model_id=model)["targets"]["square_id"])
            except NotFound:
                pass
        squares = []
        for r in rows:
            sid = r["square_id"]
            scores = {k: _num(r[k]) for k in SCORES}
            squares.append(
                {
                    "square_id": sid,
                    "index": r["idx"],
                    "x_px": r["x_px"],
                    "y_px": r["y_px"],
                    "full": bool(r["full"]),
                    "scores": scores,
                    "uncertainty": _num(r["uncertainty"]),
                    "labels": labels.get(sid, {}),
                    "suggested_rank": ranks.get(sid),
                    "target": sid in targets,
                }
            )
        return {
            "atlas_id": a["id"],
            "model_id": model,
            "sprites": self._sprites(a, model),
            "squares": squares,
        }

    # -- labels -------------------------------------------------------------------------
    def _check_square(self, c: sqlite3.Connection, atlas_id: int, square_id: int) -> None:
        if not c.execute(
            "SELECT 1 FROM squares WHERE atlas_id = ? AND square_id = ?", (atlas_id, square_id)
        ).fetchone():
            raise NotFound(f"no square {square_id} in atlas {atlas_id}")

    def put_labels(self, labels: list[dict]) -> list[dict]:
        """Record labels (all or none) and return what was saved.

        Each label is ``{atlas_id, square_id, attribute, value (0-4 or None), labeler}``;
        the transaction is committed (and synced) before this returns.
        """
        saved = []
        t = db.now()
        with db.transaction(self.conn) as c:
            for lab in labels:
                self._check_square(c, lab["atlas_id"], lab["square_id"])
                if lab["attribute"] not in SCORES:
                    raise ValueError(f"attribute must be one of {', '.join(SCORES)}")
                saved.append(self._insert_label(c, lab, t, undo_of=None))
        return [self._with_current(s) for s in saved]

    def _insert_label(self, c, lab: dict, t: str, undo_of: int | None) -> dict:
        key = (lab["atlas_id"], lab["square_id"], lab["attribute"])
        cur = c.execute(
            "INSERT INTO labels (atlas_id, square_id, attribute, value, labeler, time, undo_of) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, lab["value"], lab["labeler"], t, undo_of),
        )
        if lab["value"] is None:
            c.execute(
                "DELETE FROM current_labels WHERE atlas_id = ? AND square_id = ? AND attribute = ?",
                key,
            )
        else:
            c.execute(
                "INSERT INTO current_labels (atlas_id, square_id, attribute, value, label_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(atlas_id, square_id, attribute) DO UPDATE "
                "SET value = excluded.value, label_id = excluded.label_id",
                (*key, lab["value"], cur.lastrowid),
            )
        return {
            "id": cur.lastrowid,
            "atlas_id": key[0],
            "square_id": key[1],
            "attribute": key[2],
            "value": lab["value"],
            "labeler": lab["labeler"],
            "time": t,
            "undo_of": undo_of,
        }

    def _with_current(self, saved: dict) -> dict:
        saved["labels"] = self.square_labels(saved["atlas_id"], saved["square_id"])
        return saved

    def square_labels(self, atlas_id: int, square_id: int) -> dict[str, int]:
        return {
            r["attribute"]: r["value"]
            for r in self.conn.execute(
                "SELECT attribute, value FROM current_labels WHERE atlas_id = ? AND square_id = ?",
                (atlas_id, square_id),
            )
        }

    def undo(self, labeler: str) -> dict:
        """Undo ``labeler``'s latest label: restore that attribute's previous value."""
        with db.transaction(self.conn) as c:
            last = c.execute(
                "SELECT * FROM labels WHERE labeler = ? AND undone = 0 AND undo_of IS NULL "
                "ORDER BY id DESC LIMIT 1",
                (labeler,),
            ).fetchone()
            if last is None:
                raise NotFound(f"nothing to undo for {labeler}")
            prev = c.execute(
                "SELECT value FROM labels WHERE atlas_id = ? AND square_id = ? AND attribute = ? "
                "AND id < ? ORDER BY id DESC LIMIT 1",
                (last["atlas_id"], last["square_id"], last["attribute"], last["id"]),
            ).fetchone()
            c.execute("UPDATE labels SET undone = 1 WHERE id = ?", (last["id"],))
            lab = {
                "atlas_id": last["atlas_id"],
                "square_id": last["square_id"],
                "attribute": last["attribute"],
                "value": prev["value"] if prev else None,
                "labeler": labeler,
            }
            saved = self._insert_label(c, lab, db.now(), undo_of=last["id"])
        return self._with_current(saved)

    def label_history(
        self, atlas_id: int | None = None, square_id: int | None = None, limit: int = 1000
    ) -> list[dict]:
        where, args = [], []
        if atlas_id is not None:
            where.append("atlas_id = ?")
            args.append(atlas_id)
        if square_id is not None:
            where.append("square_id = ?")
            args.append(square_id)
        sql = "SELECT * FROM labels" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        return [dict(r) for r in self.conn.execute(sql, (*args, limit))]

    def labels_table(self, atlas_id: int | None = None) -> pd.DataFrame:
        """Current labels, one row per labeled square: ``[atlas,] square_id`` + the five scores.

        For one atlas this is exactly the ``labels.csv`` that ``cryoscout train`` reads.
        """
        sql = "SELECT atlas_id, square_id, attribute, value FROM current_labels"
        args: tuple = ()
        if atlas_id is not None:
            self._atlas_record(atlas_id)
            sql += " WHERE atlas_id = ?"
            args = (int(atlas_id),)
        long = pd.DataFrame(
            [tuple(r) for r in self.conn.execute(sql, args)],
            columns=["atlas_id", "square_id", "attribute", "value"],
        )
        wide = long.pivot_table(
            index=["atlas_id", "square_id"], columns="attribute", values="value", aggfunc="last"
        )
        wide = wide.reindex(columns=list(SCORES)).reset_index()
        wide.columns.name = None
        for c in SCORES:
            wide[c] = wide[c].astype("Int64")
        if atlas_id is not None:
            return wide.drop(columns="atlas_id").sort_values("square_id").reset_index(drop=True)
        names = {a["id"]: a["name"] for a in self.conn.execute("SELECT id, name FROM atlases")}
        wide.insert(1, "atlas", wide["atlas_id"].map(names))
        return wide.sort_values(["atlas_id", "square_id"]).reset_index(drop=True)

    def write_training_labels(self) -> list[Path]:
        """Write each ready atlas's ``labels.csv`` into its extraction folder; return them."""
        from cryoscout.io.atomic import atomic_path

        folders = []
        for a in self.conn.execute("SELECT id FROM atlases WHERE status = 'ready' ORDER BY id"):
            folder = self.extraction_dir(a["id"])
            table = self.labels_table(a["id"])
            with atomic_path(folder / "labels.csv") as tmp:
                table.to_csv(tmp, index=False)
            folders.append(folder)
        return folders

    # -- active learning ----------------------------------------------------------------
    def suggestions(
        self, n: int = 20, atlas_id: int | None = None, model_id: int | None = None
    ) -> list[Suggestion]:
        """Unlabeled full squares to label next, across all atlases (see :mod:`.active`)."""
        from cryoscout.screening.active import suggest

        model = self.current_model if model_id is None else int(model_id)
        last_label = self.conn.execute("SELECT MAX(id) FROM labels").fetchone()[0]
        n_pred = self.conn.execute(
            "SELECT COUNT(*) FROM predictions WHERE model_id = ?", (model,)
        ).fetchone()[0]
        key = (model, last_label, n_pred, n, atlas_id)
        if key in self._suggest_cache:
            return self._suggest_cache[key]
        feats, unc, ids, full = [], [], [], []
        for a in self.conn.execute(
            "SELECT id FROM atlases WHERE status = 'ready' ORDER BY id"
        ).fetchall():
            folder = self.screen_dir(a["id"], model)
            if not (folder / "features.npy").is_file():
                continue
            f = np.load(folder / "features.npy")
            u = np.load(folder / "uncertainty.npy")
            sq = self.conn.execute(
                "SELECT square_id, full FROM squares WHERE atlas_id = ? ORDER BY idx", (a["id"],)
            ).fetchall()
            if len(sq) != len(f):
                continue
            feats.append(f)
            unc.append(u)
            ids += [(a["id"], r["square_id"]) for r in sq]
            full += [bool(r["full"]) for r in sq]
        if not feats:
            return []
        labeled_set = {
            (r[0], r[1])
            for r in self.conn.execute("SELECT DISTINCT atlas_id, square_id FROM current_labels")
        }
        labeled = np.array([i in labeled_set for i in ids])
        cand = np.array(full) & ~labeled
        if atlas_id is not None:
            cand &= np.array([i[0] == atlas_id for i in ids])
        order, dist = suggest(np.concatenate(feats), np.concatenate(unc), labeled, cand, n)
        u_all = np.concatenate(unc)
        out = [
            Suggestion(ids[i][0], ids[i][1], k + 1, float(u_all[i]), float(d))
            for k, (i, d) in enumerate(zip(order, dist, strict=True))
        ]
        if len(self._suggest_cache) > 64:
            self._suggest_cache.clear()
        self._suggest_cache[key] = out
        return out

    # -- models -------------------------------------------------------------------------
    def models(self) -> list[dict]:
        current = self.current_model
        out = []
        for r in self.conn.execute("SELECT * FROM models ORDER BY id"):
            d = dict(r)
            d["error_before"] = db.loads(d["error_before"])
            d["error_after"] = db.loads(d["error_after"])
            d["current"] = d["id"] == current
            out.append(d)
        return out

    def model(self, model_id: int) -> dict:
        for m in self.models():
            if m["id"] == int(model_id):
                return m
        raise NotFound(f"no model {model_id}")

    def model_source(self, model_id: int) -> str | None:
        """What :func:`cryoscout.screening.predict.load_model` takes for a model version."""
        return self.model(model_id)["path"]

    def fine_tune_parent(self, model_id: int) -> int:
        """The model version a training started from ``model_id`` fine-tunes.

        The baseline's trees are not a network, so training from it starts from the
        shipped network.
        """
        return DEFAULT_MODEL_ID if self.model_source(model_id) == BASELINE_PATH else model_id

    def activate(self, model_id: int) -> dict:
        """Make a model current and queue rescoring of atlases it has not scored yet."""
        m = self.model(model_id)
        with db.transaction(self.conn) as c:
            db.set_meta(c, "current_model", m["id"])
            if self._unscored(c, m["id"]):
                self._create_job(c, "rescore", {"model_id": m["id"]})
        return self.model(model_id)

    def _unscored(self, c, model_id: int) -> list[int]:
        return [
            r[0]
            for r in c.execute(
                "SELECT id FROM atlases a WHERE status = 'ready' AND NOT EXISTS "
                "(SELECT 1 FROM predictions p WHERE p.model_id = ? AND p.atlas_id = a.id)",
                (model_id,),
            )
        ]

    # -- jobs ---------------------------------------------------------------------------
    def _create_job(self, c, kind: str, params: dict) -> int:
        cur = c.execute(
            "INSERT INTO jobs (kind, state, progress, params, created, message) "
            "VALUES (?, 'queued', 0, ?, ?, 'waiting for earlier jobs')",
            (kind, db.dumps(params), db.now()),
        )
        return cur.lastrowid

    def create_job(self, kind: str, params: dict) -> dict:
        with db.transaction(self.conn) as c:
            job_id = self._create_job(c, kind, params)
        return self.job(job_id)

    def job(self, job_id: int) -> dict:
        r = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if r is None:
            raise NotFound(f"no job {job_id}")
        return _job_dict(r, self)

    def jobs(self, state: str | None = None, limit: int = 200) -> list[dict]:
        sql, args = "SELECT * FROM jobs", ()
        if state:
            sql, args = sql + " WHERE state = ?", (state,)
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job_dict(r, self) for r in rows]

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Set job columns (``params``, ``result``, ``losses`` as JSON); final jobs stay final."""
        for k in ("params", "result", "losses"):
            if k in fields:
                fields[k] = db.dumps(fields[k])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with db.transaction(self.conn) as c:
            c.execute(
                f"UPDATE jobs SET {cols} WHERE id = ? AND state NOT IN "
                f"({', '.join('?' * len(db.FINAL_STATES))})",
                (*fields.values(), int(job_id), *db.FINAL_STATES),
            )

    def finish_job(self, job_id: int, state: str, message: str, result: Any = None) -> None:
        self.update_job(
            job_id,
            state=state,
            message=message,
            result=result,
            finished=db.now(),
            eta_s=None,
            **({"progress": 1.0} if state == "done" else {}),
        )

    def next_queued_job(self) -> dict | None:
        r = self.conn.execute(
            "SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1"
        ).fetchone()
        return self.job(r[0]) if r else None

    def claim_job(self, job_id: int) -> bool:
        """Move a queued job to ``running``; False when another runner took it first."""
        with db.transaction(self.conn) as c:
            cur = c.execute(
                "UPDATE jobs SET state = 'running', started = ?, message = 'starting' "
                "WHERE id = ? AND state = 'queued'",
                (db.now(), int(job_id)),
            )
        return cur.rowcount == 1

    def interrupt_running_jobs(self) -> list[int]:
        """Mark jobs left running by a previous server as interrupted (at server start)."""
        with db.transaction(self.conn) as c:
            ids = [r[0] for r in c.execute("SELECT id FROM jobs WHERE state = 'running'")]
            c.execute(
                "UPDATE jobs SET state = 'interrupted', finished = ?, message = "
                "'interrupted: the server stopped while this job ran' WHERE state = 'running'",
                (db.now(),),
            )
            # Atlases whose screening was interrupted are screened again.
            for job_id in ids:
                row = c.execute("SELECT kind, params FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row["kind"] == "screen":
                    atlas_id = db.loads(row["params"])["atlas_id"]
                    new = self._create_job(c, "screen", {"atlas_id": atlas_id})
                    c.execute(
                        "UPDATE atlases SET job_id = ?, status = 'queued' WHERE id = ?",
                        (new, atlas_id),
                    )
        return ids

    def set_atlas(self, atlas_id: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with db.transaction(self.conn) as c:
            c.execute(f"UPDATE atlases SET {cols} WHERE id = ?", (*fields.values(), int(atlas_id)))

    # -- targets ------------------------------------------------------------------------
    def set_targets(
        self,
        atlas_id: int,
        top_k: int,
        add: list[int],
        remove: list[int],
        model_id: int | None = None,
    ) -> dict:
        """Store an atlas's target choice: top-k plus squares added/removed by hand."""
        self._atlas_record(atlas_id)
        with db.transaction(self.conn) as c:
            r = c.execute("SELECT * FROM targets WHERE atlas_id = ?", (atlas_id,)).fetchone()
            added = set(db.loads(r["added"]) if r else [])
            removed = set(db.loads(r["removed"]) if r else [])
            for s in add:
                self._check_square(c, atlas_id, s)
            added = (added | set(add)) - set(remove)
            removed = (removed | set(remove)) - set(add)
            c.execute(
                "INSERT INTO targets (atlas_id, top_k, added, removed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(atlas_id) DO UPDATE SET top_k = excluded.top_k, "
                "added = excluded.added, removed = excluded.removed",
                (atlas_id, top_k, db.dumps(sorted(added)), db.dumps(sorted(removed))),
            )
        return self.targets(atlas_id, model_id=model_id)

    def targets(self, atlas_id: int, top_k: int | None = None, model_id: int | None = None) -> dict:
        """The atlas's targets as the ``targets.csv`` table (``select_targets`` of ``screen``)."""
        from cryoscout.screening.screen import rank_squares, select_targets

        a = self._atlas_record(atlas_id)
        if a["status"] != "ready":
            raise Conflict(f"atlas {atlas_id} is not screened yet")
        model = self.current_model if model_id is None else int(model_id)
        r = self.conn.execute("SELECT * FROM targets WHERE atlas_id = ?", (atlas_id,)).fetchone()
        k = top_k if top_k is not None else (r["top_k"] if r else 20)
        added = set(db.loads(r["added"])) if r else set()
        removed = set(db.loads(r["removed"])) if r else set()
        rows = self.conn.execute(
            "SELECT s.square_id, s.x_px, s.y_px, s.stage_x_um, s.stage_y_um, s.full, "
            "p.brightness, p.squareness, p.cracking, p.contamination, p.overall "
            "FROM squares s JOIN predictions p ON p.atlas_id = s.atlas_id "
            "AND p.square_id = s.square_id AND p.model_id = ? WHERE s.atlas_id = ? "
            "ORDER BY s.idx",
            (model, atlas_id),
        ).fetchall()
        if not rows:
            raise NotFound(f"atlas {atlas_id} has no scores from model {model}")
        table = pd.DataFrame([dict(x) for x in rows])
        epu = self._epu_ids(atlas_id)
        if epu is not None:
            table["epu_square_id"] = table["square_id"].map(epu)
        ranked = rank_squares(table.drop(columns=list(SCORES)), table[list(SCORES)])
        top = select_targets(ranked[~ranked["square_id"].isin(removed)], k)
        chosen = set(top["square_id"]) | added
        targets = select_targets(ranked[ranked["square_id"].isin(chosen)], len(chosen))
        in_top = targets["square_id"].isin(top["square_id"])
        targets["source"] = np.where(in_top, "top-k", "added")
        return {
            "top_k": k,
            "added": sorted(added),
            "removed": sorted(removed),
            "has_stage": bool(a["has_stage"]),
            "targets": targets,
        }

    def _epu_ids(self, atlas_id: int) -> dict | None:
        path = self.extraction_dir(atlas_id) / "squares.csv"
        if not path.is_file():
            return None
        t = pd.read_csv(path, dtype={"epu_square_id": str})
        if "epu_square_id" not in t:
            return None
        return dict(zip(t["square_id"], t["epu_square_id"], strict=True))

    def square_png(
        self, atlas_id: int, square_id: int, kind: str, model_id: int | None = None
    ) -> bytes:
        """One square at the extraction size: grey ``crop`` or an RGBA attention overlay."""
        from cryoscout.app import sprites
        from cryoscout.io.mrc import read_mrc

        self._atlas_record(atlas_id)
        row = self.conn.execute(
            "SELECT idx FROM squares WHERE atlas_id = ? AND square_id = ?", (atlas_id, square_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"no square {square_id} in atlas {atlas_id}")
        i = row["idx"]
        if kind == "crop":
            path = self.extraction_dir(atlas_id) / "squares.mrcs"
            stack, _ = read_mrc(path, mmap=True)
            # The atlas-wide stretch of the sprites (from a sample), so brightness compares.
            sample = np.asarray(stack[:: max(1, len(stack) // 64)], dtype=np.float32)
            lo, hi = np.percentile(sample, [0.5, 99.5])
            img = np.clip((np.asarray(stack[i], np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
            return sprites.png_bytes((img * 255 + 0.5).astype(np.uint8))
        model = self.current_model if model_id is None else int(model_id)
        path = self.screen_dir(atlas_id, model) / f"{kind}.npy"
        if kind not in sprites.OVERLAY_COLOURS or not path.is_file():
            raise NotFound(f"no {kind} map of atlas {atlas_id} by model {model}")
        maps = np.load(path, mmap_mode="r")
        rgba = sprites.overlay_rgba(maps[i : i + 1] / 255.0, sprites.OVERLAY_COLOURS[kind])[0]
        return sprites.png_bytes(rgba)

    def targets_nav(self, atlas_id: int, model_id: int | None = None) -> str:
        """The targets as SerialEM navigator text (``io.navigator``, as ``screen`` writes it)."""
        from cryoscout.io.navigator import navigator_text
        from cryoscout.screening.screen import _id_text

        t = self.targets(atlas_id, model_id=model_id)
        if not t["has_stage"]:
            raise Conflict(f"atlas {atlas_id} has no stage positions, so no navigator file")
        tab = t["targets"]
        cols = zip(tab["rank"], tab["square_id"], tab["overall"], strict=True)
        notes = [f"cryoscout rank {r}, square {_id_text(q)}, overall {o:.2f}" for r, q, o in cols]
        return navigator_text(tab, labels=list(tab["label"]), notes=notes)


def _job_dict(r: sqlite3.Row, project: Project) -> dict:
    d = dict(r)
    for k in ("params", "result", "losses"):
        d[k] = db.loads(d[k])
    d["losses"] = d["losses"] or []
    d["resumable"] = (
        d["kind"] in ("train", "pick_train")
        and d["state"] in ("interrupted", "cancelled", "failed")
        and (
            project.path / (d["params"] or {}).get("run_dir", "-") / "checkpoints" / "last.ckpt"
        ).is_file()
    )
    d.pop("pid", None)
    return d


def _num(v: Any) -> float | None:
    return None if v is None else round(float(v), 4)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "user"
