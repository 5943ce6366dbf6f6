"""The project database: SQLite in WAL mode, committed with ``synchronous=FULL``.

Every write is one short transaction, so a label the server has answered for is
on disk even if the process is killed the next instant, and two clients writing
at once are serialised by SQLite instead of overwriting each other.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS atlases (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL, folder TEXT NOT NULL,
    status TEXT NOT NULL, message TEXT, job_id INTEGER, created TEXT NOT NULL,
    has_stage INTEGER, square_px REAL, overview_w INTEGER, overview_h INTEGER,
    overview_scale REAL, sprite_size INTEGER, sprite_cols INTEGER, lattice_angle_deg REAL);
CREATE TABLE IF NOT EXISTS squares (
    atlas_id INTEGER NOT NULL, square_id INTEGER NOT NULL, idx INTEGER NOT NULL,
    x_px REAL, y_px REAL, full INTEGER, stage_x_um REAL, stage_y_um REAL,
    PRIMARY KEY (atlas_id, square_id));
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT, parent INTEGER, created TEXT,
    job_id INTEGER, n_labeled INTEGER, n_unlabeled INTEGER, n_test INTEGER,
    error_before TEXT, error_after TEXT);
CREATE TABLE IF NOT EXISTS predictions (
    model_id INTEGER NOT NULL, atlas_id INTEGER NOT NULL, square_id INTEGER NOT NULL,
    brightness REAL, squareness REAL, cracking REAL, contamination REAL, overall REAL,
    uncertainty REAL, PRIMARY KEY (model_id, atlas_id, square_id));
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY, atlas_id INTEGER NOT NULL, square_id INTEGER NOT NULL,
    attribute TEXT NOT NULL, value INTEGER, labeler TEXT NOT NULL, time TEXT NOT NULL,
    undo_of INTEGER, undone INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS labels_square ON labels (atlas_id, square_id, attribute, id);
CREATE INDEX IF NOT EXISTS labels_labeler ON labels (labeler, id);
CREATE TABLE IF NOT EXISTS current_labels (
    atlas_id INTEGER NOT NULL, square_id INTEGER NOT NULL, attribute TEXT NOT NULL,
    value INTEGER NOT NULL, label_id INTEGER NOT NULL,
    PRIMARY KEY (atlas_id, square_id, attribute));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, progress REAL,
    eta_s REAL, message TEXT, params TEXT, result TEXT, losses TEXT,
    created TEXT NOT NULL, started TEXT, finished TEXT, pid INTEGER);
CREATE TABLE IF NOT EXISTS targets (
    atlas_id INTEGER PRIMARY KEY, top_k INTEGER NOT NULL, added TEXT, removed TEXT);
CREATE TABLE IF NOT EXISTS tomograms (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL, source TEXT NOT NULL,
    copick_config TEXT, copick_run TEXT, copick_tomo_type TEXT,
    nx INTEGER, ny INTEGER, nz INTEGER, voxel_size_A REAL, dtype TEXT, contrast TEXT,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS particle_classes (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, colour TEXT NOT NULL,
    radius_A REAL, radius_vox REAL, template TEXT, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tomogram_id INTEGER NOT NULL, class_id INTEGER NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, z REAL NOT NULL, source TEXT, pick_id INTEGER,
    labeler TEXT NOT NULL, time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS annotations_tomogram ON annotations (tomogram_id);
CREATE TABLE IF NOT EXISTS annotation_events (
    id INTEGER PRIMARY KEY, annotation_id INTEGER NOT NULL, tomogram_id INTEGER NOT NULL,
    action TEXT NOT NULL, class_id INTEGER, x REAL, y REAL, z REAL,
    before TEXT, labeler TEXT NOT NULL, time TEXT NOT NULL,
    undo_of INTEGER, undone INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS annotation_events_labeler ON annotation_events (labeler, id);
CREATE TABLE IF NOT EXISTS pickers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT, job_id INTEGER, created TEXT,
    classes TEXT, n_annotations INTEGER, params TEXT, metrics TEXT);
CREATE TABLE IF NOT EXISTS picks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, picker_id INTEGER NOT NULL, tomogram_id INTEGER NOT NULL,
    class_id INTEGER NOT NULL, x REAL NOT NULL, y REAL NOT NULL, z REAL NOT NULL,
    score REAL, status TEXT NOT NULL DEFAULT 'pending', annotation_id INTEGER);
CREATE INDEX IF NOT EXISTS picks_tomogram ON picks (tomogram_id, picker_id);
"""

#: Job states after which a job never changes again.
FINAL_STATES = ("done", "failed", "cancelled", "interrupted")


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds (``2026-11-29T10:01:02.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open (and create) the project database.

    Parameters
    ----------
    path
        The database file (``PROJECT/cryoscout.db``).

    Returns
    -------
    sqlite3.Connection
        In autocommit mode (use ``with transaction(conn):`` to group writes),
        WAL journal, ``synchronous=FULL``, rows as :class:`sqlite3.Row`.
    """
    conn = sqlite3.connect(Path(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is synced at every commit, so a committed label survives power loss too.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    return conn


class transaction:
    """``with transaction(conn):`` runs the block in one ``BEGIN IMMEDIATE`` transaction.

    IMMEDIATE takes the write lock at the start, so two writers never both read
    a stale state and then write.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else default


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


def dumps(value: Any) -> str | None:
    """JSON text for a column (``None`` stays NULL; NaN and infinities become null)."""
    return None if value is None else json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
