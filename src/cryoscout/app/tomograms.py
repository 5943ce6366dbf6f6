"""The tomogram workspace of a project: tomograms, particle classes, annotations.

Everything lives in the project's database (:mod:`cryoscout.app.db`); every change
is one ``BEGIN IMMEDIATE`` transaction, committed (and synced) before the call
returns, like the labels of grid screening. Annotations keep an append-only event
log (``annotation_events``: add, move, delete, each with the state before) from
which :meth:`TomogramStore.undo` restores a labeler's previous state.

Coordinates are voxels of the tomogram as mrcfile reads it: arrays ``[z, y, x]``,
``x`` = column, ``y`` = row; voxel centres at integers (docs/app-api-tomograms.md).
"""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoscout.app import db, slices
from cryoscout.app.project import Conflict, NotFound, Project
from cryoscout.errors import InputError

MRC_SUFFIXES = (".mrc", ".rec", ".map")
#: Class names: what copick accepts as a pickable object name.
CLASS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Default class colours (Sasha Trubetskoy's distinct colours), in order of creation.
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3",
)  # fmt: skip
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
#: Shared by every store of the process: open memory maps / zarr arrays.
VOLUMES = slices.VolumeCache(size=4)


class TomogramStore:
    """Tomograms, particle classes and annotations of one :class:`Project`.

    Parameters
    ----------
    project
        The project (its per-thread connection and allowed input folders are used).
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        # (tomogram id, bin, sigma) -> contrast table of a processed view (memory only).
        self._contrast: dict[tuple, np.ndarray] = {}

    @property
    def conn(self) -> sqlite3.Connection:
        return self.project.conn

    # -- tomograms ------------------------------------------------------------------
    def add(
        self,
        path: str,
        name: str | None = None,
        voxel_size_A: float | None = None,
        tomo_type: str | None = None,
    ) -> list[dict]:
        """Add an MRC tomogram, or every tomogram of a copick project (its config ``.json``).

        Parameters
        ----------
        path
            ``.mrc``/``.rec``/``.map`` file (memory-mapped) or copick config ``.json``,
            inside the project or a data root.
        name
            Display name of an MRC tomogram (default: the RELION tilt-series name of the
            file, :func:`cryoscout.io.coords.tomo_name_from_path`). Copick tomograms are
            named by their run.
        voxel_size_A, tomo_type
            For a copick project whose runs have several voxel spacings or tomogram types.

        Returns
        -------
        list of dict
            The new rows.

        Raises
        ------
        InputError
            Outside the allowed folders, unreadable, or not a 3D volume.
        Conflict
            Already added.
        """
        p = self.project.check_input_path(path)
        if p.suffix.lower() == ".json":
            return self._add_copick(p, voxel_size_A, tomo_type)
        if p.suffix.lower() not in MRC_SUFFIXES:
            raise InputError(
                p, f"not a tomogram: expected {', '.join(MRC_SUFFIXES)} or a copick config .json"
            )
        from cryoscout.io.coords import tomo_name_from_path
        from cryoscout.io.mrc import read_mrc

        volume, voxel = read_mrc(p, mmap=True)
        if volume.ndim != 3 or min(volume.shape) < 2:
            raise InputError(p, f"not a 3D volume (shape {tuple(volume.shape)})")
        if self.conn.execute(
            "SELECT 1 FROM tomograms WHERE path = ? AND source = 'mrc'", (str(p),)
        ).fetchone():
            raise Conflict(f"{p}: already added")
        contrast = slices.contrast_sample(volume)
        row = {
            "name": name or tomo_name_from_path(p),
            "path": str(p),
            "source": "mrc",
            "shape": volume.shape,
            "voxel_size_A": voxel,
            "dtype": str(volume.dtype),
            "contrast": contrast,
        }
        with db.transaction(self.conn) as c:
            ids = [self._insert(c, row)]
        return [self.tomogram(i) for i in ids]

    def _add_copick(self, config: Path, voxel_size_A, tomo_type) -> list[dict]:
        from cryoscout.io.copick_project import list_copick_tomograms, open_copick_tomogram

        found = list_copick_tomograms(config, voxel_size_A, tomo_type)
        rows = []
        for t in found:
            if self.conn.execute(
                "SELECT 1 FROM tomograms WHERE copick_config = ? AND copick_run = ? "
                "AND copick_tomo_type = ? AND voxel_size_A = ?",
                (str(config), t.run, t.tomo_type, t.voxel_size_A),
            ).fetchone():
                raise Conflict(f"{config}: run {t.run} ({t.tomo_type}) already added")
            try:
                volume = open_copick_tomogram(t)
                contrast = slices.contrast_sample(volume)
            except InputError:
                raise
            except Exception as exc:
                raise InputError(config, f"run {t.run}: unreadable tomogram ({exc})") from None
            rows.append(
                {
                    "name": t.run,
                    "path": str(config),
                    "source": "copick",
                    "copick_config": str(config),
                    "copick_run": t.run,
                    "copick_tomo_type": t.tomo_type,
                    "shape": t.shape,
                    "voxel_size_A": t.voxel_size_A,
                    "dtype": str(volume.dtype),
                    "contrast": contrast,
                }
            )
        with db.transaction(self.conn) as c:
            ids = [self._insert(c, r) for r in rows]
        self._add_copick_classes(config)
        return [self.tomogram(i) for i in ids]

    def _add_copick_classes(self, config: Path) -> None:
        """Create the project's particle types as classes (those not defined yet), so that
        annotations export back into the project under the names copick knows."""
        from cryoscout.io.copick_project import copick_particle_types

        known = {c["name"] for c in self.classes()}
        for t in copick_particle_types(config):
            if t.name in known or not CLASS_NAME.match(t.name) or not t.radius_A:
                continue
            colour = t.colour if t.colour and _COLOUR.match(t.colour) else None
            self.add_class(t.name, colour=colour, radius_A=t.radius_A)

    def _insert(self, c: sqlite3.Connection, r: dict) -> int:
        nz, ny, nx = (int(n) for n in r["shape"])
        cur = c.execute(
            "INSERT INTO tomograms (name, path, source, copick_config, copick_run, "
            "copick_tomo_type, nx, ny, nz, voxel_size_A, dtype, contrast, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r["name"],
                r["path"],
                r["source"],
                r.get("copick_config"),
                r.get("copick_run"),
                r.get("copick_tomo_type"),
                nx,
                ny,
                nz,
                r["voxel_size_A"],
                r["dtype"],
                db.dumps({"q": "0:100:0.5", "values": [float(v) for v in r["contrast"]]}),
                db.now(),
            ),
        )
        return cur.lastrowid

    def record(self, tomogram_id: int) -> sqlite3.Row:
        """The database row of a tomogram (404 when unknown)."""
        r = self.conn.execute("SELECT * FROM tomograms WHERE id = ?", (int(tomogram_id),))
        row = r.fetchone()
        if row is None:
            raise NotFound(f"no tomogram {tomogram_id}")
        return row

    def tomograms(self) -> list[dict]:
        """Every tomogram's row (see docs/app-api-tomograms.md), in the order added."""
        return [self._row(t) for t in self.conn.execute("SELECT * FROM tomograms ORDER BY id")]

    def tomogram(self, tomogram_id: int) -> dict:
        return self._row(self.record(tomogram_id))

    def _row(self, t: sqlite3.Row) -> dict:
        c = self.conn
        n_ann = dict(
            c.execute(
                "SELECT pc.name, COUNT(*) FROM annotations a JOIN particle_classes pc "
                "ON pc.id = a.class_id WHERE a.tomogram_id = ? GROUP BY pc.name ORDER BY pc.id",
                (t["id"],),
            ).fetchall()
        )
        latest = c.execute(
            "SELECT MAX(picker_id) FROM picks WHERE tomogram_id = ?", (t["id"],)
        ).fetchone()[0]
        n_picks = {}
        if latest is not None:
            n_picks = dict(
                c.execute(
                    "SELECT pc.name, COUNT(*) FROM picks p JOIN particle_classes pc "
                    "ON pc.id = p.class_id WHERE p.tomogram_id = ? AND p.picker_id = ? "
                    "GROUP BY pc.name ORDER BY pc.id",
                    (t["id"], latest),
                ).fetchall()
            )
        copick = None
        if t["source"] == "copick":
            copick = {
                "config": t["copick_config"],
                "run": t["copick_run"],
                "tomo_type": t["copick_tomo_type"],
                "voxel_size_A": t["voxel_size_A"],
            }
        return {
            "id": t["id"],
            "name": t["name"],
            "path": t["path"],
            "source": t["source"],
            "copick": copick,
            "shape": {"x": t["nx"], "y": t["ny"], "z": t["nz"]},
            "voxel_size_A": t["voxel_size_A"],
            "n_annotations": n_ann,
            "n_picks": n_picks,
            "latest_picker": latest,
        }

    def volume(self, tomogram_id: int) -> Any:
        """The tomogram's ``(z, y, x)`` array, opened lazily (memory map or zarr), cached."""
        t = self.record(tomogram_id)
        key = (t["source"], t["path"], t["copick_run"], t["copick_tomo_type"], t["voxel_size_A"])

        def opener():
            if t["source"] == "copick":
                from cryoscout.io.copick_project import CopickTomogram, open_copick_tomogram

                shape = (t["nz"], t["ny"], t["nx"])
                ref = CopickTomogram(
                    Path(t["copick_config"]), t["copick_run"], t["voxel_size_A"],
                    t["copick_tomo_type"], shape,
                )  # fmt: skip
                return open_copick_tomogram(ref), None
            from cryoscout.io.mrc import read_mrc

            return read_mrc(t["path"], mmap=True)[0], None

        volume = VOLUMES.get(key, opener)
        if tuple(volume.shape) != (t["nz"], t["ny"], t["nx"]):
            raise InputError(t["path"], "the file changed since it was added (other shape)")
        return volume

    def contrast_table(self, tomogram_id: int, bin: int = 1, sigma_vox: float = 0.0) -> np.ndarray:
        """Percentile table for a view: cached in the DB for the plain view, else in memory."""
        if bin == 1 and sigma_vox <= 0:
            stored = db.loads(self.record(tomogram_id)["contrast"])
            return np.asarray(stored["values"], float)
        key = (int(tomogram_id), bin, float(sigma_vox))
        if key not in self._contrast:
            if len(self._contrast) > 64:
                self._contrast.clear()
            self._contrast[key] = slices.contrast_sample(self.volume(tomogram_id), bin, sigma_vox)
        return self._contrast[key]

    def slice_png(
        self,
        tomogram_id: int,
        axis: str = "z",
        index: int = 0,
        bin: int = 1,
        lowpass: float = 0.0,
        lo: float = 1.0,
        hi: float = 99.0,
    ) -> tuple[bytes, tuple[int, int]]:
        """One section as an 8-bit PNG and its ``(h, w)`` (docs/app-api-tomograms.md).

        Raises
        ------
        ValueError
            Bad axis, bin, index, low-pass or percentiles.
        """
        if not (0 <= lo < hi <= 100):
            raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100 (got {lo}, {hi})")
        if not (0 <= lowpass <= 50) or not math.isfinite(lowpass):
            raise ValueError(f"lowpass must be a sigma of 0-50 voxels, not {lowpass}")
        volume = self.volume(tomogram_id)
        img = slices.view(volume, axis, int(index), int(bin), float(lowpass))
        table = self.contrast_table(tomogram_id, int(bin), float(lowpass))
        vlo, vhi = slices.percentile_value(table, lo), slices.percentile_value(table, hi)
        return slices.png_grey(slices.to_uint8(img, vlo, vhi)), img.shape

    # -- particle classes -------------------------------------------------------------
    def classes(self) -> list[dict]:
        """Every particle class with its number of annotations, in the order created."""
        counts = dict(
            self.conn.execute(
                "SELECT class_id, COUNT(*) FROM annotations GROUP BY class_id"
            ).fetchall()
        )
        return [
            _class_row(r, counts.get(r["id"], 0))
            for r in self.conn.execute("SELECT * FROM particle_classes ORDER BY id")
        ]

    def particle_class(self, class_id: int) -> dict:
        for c in self.classes():
            if c["id"] == int(class_id):
                return c
        raise NotFound(f"no particle class {class_id}")

    def class_by_name(self, name: str) -> sqlite3.Row:
        """The class row named ``name``; ``ValueError`` (400) when there is none."""
        row = self.conn.execute(
            "SELECT * FROM particle_classes WHERE name = ?", (str(name),)
        ).fetchone()
        if row is None:
            known = [r[0] for r in self.conn.execute("SELECT name FROM particle_classes")]
            raise ValueError(
                f"unknown particle class {name!r} (known: {', '.join(known) or 'none'})"
            )
        return row

    def add_class(
        self,
        name: str,
        colour: str | None = None,
        radius_A: float | None = None,
        radius_vox: float | None = None,
        template: str | None = None,
    ) -> dict:
        """Create a particle class; with a ``template`` map and no radius, estimate it.

        The radius from a template is :func:`cryoscout.simulate.tomo_phantom.template_radius`
        (the largest distance from the centre of mass of a voxel above 20% of the
        maximum: the simulator's definition) times the map's voxel size.

        Raises
        ------
        ValueError
            A name that is not copick-safe, a bad colour, no or a non-positive radius.
        Conflict
            The name is taken.
        """
        fields = self._class_fields(name, colour, radius_A, radius_vox, template)
        with db.transaction(self.conn) as c:
            if c.execute("SELECT 1 FROM particle_classes WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"a particle class named {name!r} exists")
            if fields["colour"] is None:
                n = c.execute("SELECT COUNT(*) FROM particle_classes").fetchone()[0]
                fields["colour"] = PALETTE[n % len(PALETTE)]
            cur = c.execute(
                "INSERT INTO particle_classes (name, colour, radius_A, radius_vox, template, "
                "created) VALUES (?, ?, ?, ?, ?, ?)",
                (name, fields["colour"], fields["radius_A"], fields["radius_vox"],
                 fields["template"], db.now()),
            )  # fmt: skip
        return self.particle_class(cur.lastrowid)

    def update_class(self, class_id: int, **changes: Any) -> dict:
        """Change a class's ``name``, ``colour``, radii or ``template`` (given keys only)."""
        old = self.particle_class(class_id)
        merged = {k: old[k] for k in ("name", "colour", "radius_A", "radius_vox", "template")}
        if (
            "template" in changes
            and changes["template"]
            and not ({"radius_A", "radius_vox"} & changes.keys())
        ):
            merged["radius_A"] = merged["radius_vox"] = None  # re-estimate from the new map
        merged.update(changes)
        tpl = changes.get("template") if "template" in changes else None
        fields = self._class_fields(
            merged["name"], merged["colour"], merged["radius_A"], merged["radius_vox"], tpl
        )
        if "template" not in changes:
            fields["template"] = old["template"]
        with db.transaction(self.conn) as c:
            if c.execute(
                "SELECT 1 FROM particle_classes WHERE name = ? AND id != ?",
                (merged["name"], int(class_id)),
            ).fetchone():
                raise Conflict(f"a particle class named {merged['name']!r} exists")
            c.execute(
                "UPDATE particle_classes SET name = ?, colour = ?, radius_A = ?, radius_vox = ?, "
                "template = ? WHERE id = ?",
                (merged["name"], fields["colour"] or old["colour"], fields["radius_A"],
                 fields["radius_vox"], fields["template"], int(class_id)),
            )  # fmt: skip
        return self.particle_class(class_id)

    def delete_class(self, class_id: int) -> dict:
        """Delete an unused class (409 while annotations or picks refer to it)."""
        self.particle_class(class_id)
        with db.transaction(self.conn) as c:
            for table in ("annotations", "picks"):
                n = c.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE class_id = ?", (int(class_id),)
                ).fetchone()[0]
                if n:
                    raise Conflict(f"particle class {class_id} has {n} {table}; remove them first")
            c.execute("DELETE FROM particle_classes WHERE id = ?", (int(class_id),))
        return {"deleted": int(class_id)}

    def _class_fields(self, name, colour, radius_A, radius_vox, template) -> dict:
        if not isinstance(name, str) or not CLASS_NAME.match(name):
            raise ValueError(
                f"class name {name!r}: use 1-64 letters, digits, '-' or '_' (copick's rule)"
            )
        if colour is not None and not _COLOUR.match(colour):
            raise ValueError(f"colour {colour!r}: use #rrggbb")
        for what, r in (("radius_A", radius_A), ("radius_vox", radius_vox)):
            if r is not None and not (math.isfinite(r) and r > 0):
                raise ValueError(f"{what} must be a positive number, not {r}")
        template_path = None
        if template:
            p = self.project.check_input_path(template)
            template_path = str(p)
            if radius_A is None and radius_vox is None:
                radius_A, radius_vox = _template_radius(p)
        if radius_A is None and radius_vox is None:
            raise ValueError("give radius_A or radius_vox (or a template map to estimate it)")
        return {
            "colour": colour,
            "radius_A": radius_A,
            "radius_vox": radius_vox,
            "template": template_path,
        }

    def radius_vox(self, class_row: sqlite3.Row | dict, tomogram_id: int) -> float | None:
        """A class's radius in voxels of one tomogram (``radius_vox``, else Å / voxel size)."""
        if class_row["radius_vox"]:
            return float(class_row["radius_vox"])
        voxel = self.record(tomogram_id)["voxel_size_A"]
        if class_row["radius_A"] and voxel:
            return float(class_row["radius_A"]) / float(voxel)
        return None

    # -- annotations ----------------------------------------------------------------
    def annotations(self, tomogram_id: int) -> list[dict]:
        """The current annotations of a tomogram, oldest first."""
        self.record(tomogram_id)
        rows = self.conn.execute(
            "SELECT a.*, pc.name AS class FROM annotations a JOIN particle_classes pc "
            "ON pc.id = a.class_id WHERE a.tomogram_id = ? ORDER BY a.id",
            (int(tomogram_id),),
        ).fetchall()
        return [_annotation_row(r) for r in rows]

    def annotation(self, annotation_id: int) -> dict:
        r = self.conn.execute(
            "SELECT a.*, pc.name AS class FROM annotations a JOIN particle_classes pc "
            "ON pc.id = a.class_id WHERE a.id = ?",
            (int(annotation_id),),
        ).fetchone()
        if r is None:
            raise NotFound(f"no annotation {annotation_id}")
        return _annotation_row(r)

    def annotations_table(self, tomogram_id: int) -> pd.DataFrame:
        """Current annotations as a picks table: ``class`` (1-based rank of the class id
        among the project's classes), ``name``, ``x, y, z``."""
        ranks = {c["id"]: i + 1 for i, c in enumerate(self.classes())}
        rows = self.annotations(tomogram_id)
        return pd.DataFrame(
            {
                "class": [ranks[a["class_id"]] for a in rows],
                "name": [a["class"] for a in rows],
                "x": [a["x"] for a in rows],
                "y": [a["y"] for a in rows],
                "z": [a["z"] for a in rows],
            },
            columns=["class", "name", "x", "y", "z"],
        )

    def add_annotation(
        self,
        tomogram_id: int,
        class_name: str,
        x: float,
        y: float,
        z: float,
        labeler: str = "user",
        source: str = "click",
        pick_id: int | None = None,
    ) -> dict:
        """Place a particle centre; committed before this returns."""
        with db.transaction(self.conn) as c:
            ann_id = self.insert_annotation(
                c, tomogram_id, class_name, (x, y, z), labeler, source, pick_id
            )
            return self.annotation(ann_id)

    def insert_annotation(
        self,
        c: sqlite3.Connection,
        tomogram_id: int,
        class_name: str,
        xyz: tuple[float, float, float],
        labeler: str,
        source: str = "click",
        pick_id: int | None = None,
    ) -> int:
        """Insert an annotation and its ``add`` event inside the caller's transaction ``c``.

        For code that changes more than annotations in one transaction (accepting a pick).
        """
        t = self.record(tomogram_id)
        cls = self.class_by_name(class_name)
        _check_inside(t, xyz)
        now = db.now()
        # AUTOINCREMENT: an id is never used twice, so the event log never mixes two particles.
        ann_id = c.execute(
            "INSERT INTO annotations (tomogram_id, class_id, x, y, z, source, pick_id, "
            "labeler, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t["id"], cls["id"], *map(float, xyz), source, pick_id, labeler, now),
        ).lastrowid
        _event(c, ann_id, t["id"], "add", cls["id"], xyz, None, labeler, now)
        return ann_id

    def move_annotation(self, annotation_id: int, labeler: str = "user", **changes: Any) -> dict:
        """Move (``x``, ``y``, ``z``) and/or reclass (``class``) an annotation."""
        with db.transaction(self.conn) as c:
            old = self.annotation(annotation_id)
            t = self.record(old["tomogram_id"])
            cls_id = old["class_id"]
            if changes.get("class") is not None:
                cls_id = self.class_by_name(changes["class"])["id"]
            xyz = tuple(
                float(changes[k]) if changes.get(k) is not None else old[k] for k in ("x", "y", "z")
            )
            _check_inside(t, xyz)
            now = db.now()
            c.execute(
                "UPDATE annotations SET class_id = ?, x = ?, y = ?, z = ?, labeler = ?, time = ? "
                "WHERE id = ?",
                (cls_id, *xyz, labeler, now, int(annotation_id)),
            )
            _event(c, old["id"], t["id"], "move", cls_id, xyz, _state(old), labeler, now)
            return self.annotation(annotation_id)

    def delete_annotation(self, annotation_id: int, labeler: str = "user") -> dict:
        """Remove an annotation (its event keeps the state, for undo)."""
        with db.transaction(self.conn) as c:
            self.remove_annotation(c, annotation_id, labeler)
        return {"deleted": int(annotation_id)}

    def remove_annotation(self, c: sqlite3.Connection, annotation_id: int, labeler: str) -> None:
        """Delete an annotation and log it inside the caller's transaction ``c``.

        A pick accepted into this annotation goes back to ``pending``.
        """
        old = self.annotation(annotation_id)
        c.execute("DELETE FROM annotations WHERE id = ?", (old["id"],))
        c.execute(
            "UPDATE picks SET annotation_id = NULL, status = 'pending' WHERE annotation_id = ?",
            (old["id"],),
        )
        xyz = (old["x"], old["y"], old["z"])
        _event(c, old["id"], old["tomogram_id"], "delete", old["class_id"], xyz, _state(old),
               labeler, db.now())  # fmt: skip

    def undo(self, labeler: str = "user") -> dict:
        """Undo ``labeler``'s latest add, move or delete that is not undone yet.

        Restores the state before that event (an add is deleted, a move moved back, a
        delete restored with its id) and logs the restoration as an event with
        ``undo_of``. When someone else has since removed the annotation, there is
        nothing to restore and ``annotation`` is None.

        Returns
        -------
        dict
            ``{"undone": <event>, "annotation": <row or None>}``.

        Raises
        ------
        Conflict
            Nothing to undo.
        """
        with db.transaction(self.conn) as c:
            ev = c.execute(
                "SELECT * FROM annotation_events WHERE labeler = ? AND undone = 0 "
                "AND undo_of IS NULL ORDER BY id DESC LIMIT 1",
                (labeler,),
            ).fetchone()
            if ev is None:
                raise Conflict(f"nothing to undo for {labeler}")
            c.execute("UPDATE annotation_events SET undone = 1 WHERE id = ?", (ev["id"],))
            ann_id = ev["annotation_id"]
            exists = c.execute("SELECT 1 FROM annotations WHERE id = ?", (ann_id,)).fetchone()
            before = db.loads(ev["before"])
            now = db.now()
            result = None
            if ev["action"] == "add" and exists:
                old = self.annotation(ann_id)
                c.execute("DELETE FROM annotations WHERE id = ?", (ann_id,))
                c.execute(
                    "UPDATE picks SET annotation_id = NULL, status = 'pending' "
                    "WHERE annotation_id = ?",
                    (ann_id,),
                )
                xyz = (old["x"], old["y"], old["z"])
                _event(c, ann_id, ev["tomogram_id"], "delete", old["class_id"], xyz,
                       _state(old), labeler, now, undo_of=ev["id"])  # fmt: skip
            elif ev["action"] == "move" and exists:
                old = self.annotation(ann_id)
                xyz = (before["x"], before["y"], before["z"])
                c.execute(
                    "UPDATE annotations SET class_id = ?, x = ?, y = ?, z = ?, labeler = ?, "
                    "time = ? WHERE id = ?",
                    (before["class_id"], *xyz, labeler, now, ann_id),
                )
                _event(c, ann_id, ev["tomogram_id"], "move", before["class_id"], xyz,
                       _state(old), labeler, now, undo_of=ev["id"])  # fmt: skip
                result = self.annotation(ann_id)
            elif ev["action"] == "delete" and not exists:
                xyz = (before["x"], before["y"], before["z"])
                c.execute(
                    "INSERT INTO annotations (id, tomogram_id, class_id, x, y, z, source, "
                    "pick_id, labeler, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ann_id, ev["tomogram_id"], before["class_id"], *xyz, before["source"],
                     before["pick_id"], labeler, now),
                )  # fmt: skip
                if before["pick_id"] is not None:
                    c.execute(
                        "UPDATE picks SET annotation_id = ?, status = 'accepted' WHERE id = ? "
                        "AND annotation_id IS NULL",
                        (ann_id, before["pick_id"]),
                    )
                _event(c, ann_id, ev["tomogram_id"], "add", before["class_id"], xyz, None,
                       labeler, now, undo_of=ev["id"])  # fmt: skip
                result = self.annotation(ann_id)
            undone = _event_row(c, ev["id"])
        return {"undone": undone, "annotation": result}

    def import_annotations(
        self,
        tomogram_id: int,
        path: str,
        class_name: str | None = None,
        labeler: str = "user",
        tilt_series_pixel_size_A: float | None = None,
        binning: float | None = None,
    ) -> dict:
        """Add the particles of a coordinates file (CSV, ``.coords``, RELION 4/5 STAR).

        The class of each particle is ``class_name`` when given; else the file's ``name``
        column; else, with a single project class, that class. RELION 4 files need the
        tilt-series pixel size or binning (or the file's optics table), as on the
        command line (:func:`cryoscout.io.coords.read_coords`).

        Returns
        -------
        dict
            ``{"added": n}``.
        """
        from cryoscout.io.coords import read_coords

        t = self.record(tomogram_id)
        p = self.project.check_input_path(path)
        kwargs = {
            "voxel_size_A": t["voxel_size_A"],
            "shape": (t["nz"], t["ny"], t["nx"]),
            "tilt_series_pixel_size_A": tilt_series_pixel_size_A,
            "binning": binning,
        }
        try:
            table = read_coords(p, **kwargs)
        except InputError as exc:
            if "several tomograms" not in str(exc):
                raise
            table = read_coords(p, t["name"], **kwargs)  # the rows of this tomogram
        if class_name is not None:
            names = [class_name] * len(table)
        elif "name" in table:
            names = list(table["name"].astype(str))
        else:
            known = [r[0] for r in self.conn.execute("SELECT name FROM particle_classes")]
            if len(known) != 1:
                raise InputError(
                    p, "the file does not name its classes: choose the class to import them as"
                )
            names = known * len(table)
        with db.transaction(self.conn) as c:
            for name, (x, y, z) in zip(names, table[["x", "y", "z"]].to_numpy(), strict=True):
                self.insert_annotation(c, t["id"], name, (x, y, z), labeler, "import")
        return {"added": len(table)}


def _template_radius(path: Path) -> tuple[float | None, float | None]:
    """``(radius_A, None)`` of a template map with a voxel size, else ``(None, radius_vox)``."""
    from cryoscout.io.mrc import read_mrc
    from cryoscout.simulate.tomo_phantom import template_radius

    data, voxel = read_mrc(path)
    if data.ndim != 3:
        raise InputError(path, f"a template must be a 3D map (shape {data.shape})")
    r = template_radius(data)
    return (r * voxel, None) if voxel else (None, r)


def _check_inside(t: sqlite3.Row, xyz) -> None:
    x, y, z = (float(v) for v in xyz)
    if not all(math.isfinite(v) for v in (x, y, z)):
        raise ValueError("coordinates must be finite numbers")
    # Voxel centres run from 0 to N-1; the half voxel around them is inside.
    for v, n, axis in ((x, t["nx"], "x"), (y, t["ny"], "y"), (z, t["nz"], "z")):
        if not -0.5 <= v <= n - 0.5:
            raise ValueError(
                f"({x:g}, {y:g}, {z:g}) is outside the {t['nx']}x{t['ny']}x{t['nz']} volume "
                f"of tomogram {t['id']} ({axis})"
            )


def _state(ann: dict) -> str:
    keys = ("class_id", "x", "y", "z", "source", "pick_id", "labeler", "time")
    return db.dumps({k: ann[k] for k in keys})


def _event(c, ann_id, tomo_id, action, class_id, xyz, before, labeler, now, undo_of=None) -> int:
    cur = c.execute(
        "INSERT INTO annotation_events (annotation_id, tomogram_id, action, class_id, x, y, z, "
        "before, labeler, time, undo_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ann_id, tomo_id, action, class_id, *map(float, xyz), before, labeler, now, undo_of),
    )
    return cur.lastrowid


def _event_row(c: sqlite3.Connection, event_id: int) -> dict:
    r = c.execute(
        "SELECT e.*, pc.name AS class FROM annotation_events e LEFT JOIN particle_classes pc "
        "ON pc.id = e.class_id WHERE e.id = ?",
        (event_id,),
    ).fetchone()
    d = dict(r)
    d["before"] = db.loads(d["before"])
    d["undone"] = bool(d["undone"])
    return d


def _annotation_row(r: sqlite3.Row) -> dict:
    return {
        "id": r["id"],
        "tomogram_id": r["tomogram_id"],
        "class": r["class"],
        "class_id": r["class_id"],
        "x": r["x"],
        "y": r["y"],
        "z": r["z"],
        "source": r["source"],
        "pick_id": r["pick_id"],
        "labeler": r["labeler"],
        "time": r["time"],
    }


def _class_row(r: sqlite3.Row, n_annotations: int) -> dict:
    return {
        "id": r["id"],
        "name": r["name"],
        "colour": r["colour"],
        "radius_A": r["radius_A"],
        "radius_vox": r["radius_vox"],
        "template": r["template"],
        "n_annotations": n_annotations,
    }
