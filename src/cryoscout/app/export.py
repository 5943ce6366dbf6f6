"""Annotations and picks of the app's tomograms out to files and copick projects.

Files are written by :func:`cryoscout.io.coords.write_picks` (CSV, ``.coords``, RELION 4
and 5 STAR), copick picks by :func:`cryoscout.io.copick_project.write_copick_picks`, so
the app writes exactly what ``cryoscout pick predict`` writes. Class numbers are the
1-based order of the project's particle classes; class names go with them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from cryoscout.app.tomograms import TomogramStore
from cryoscout.errors import InputError

WHAT = ("annotations", "picks")
EXTENSION = {"csv": ".csv", "coords": ".coords", "relion4": ".star", "relion5": ".star"}
COLUMNS = ["class", "name", "x", "y", "z", "score"]


def latest_picker(store: TomogramStore, tomogram_id: int) -> int | None:
    """The newest picker with picks on a tomogram (None when it has none)."""
    return store.conn.execute(
        "SELECT MAX(picker_id) FROM picks WHERE tomogram_id = ?", (int(tomogram_id),)
    ).fetchone()[0]


def table(
    store: TomogramStore,
    tomogram_id: int,
    what: str = "annotations",
    picker: int | None = None,
    threshold: float | None = None,
    status: str = "all",
) -> pd.DataFrame:
    """What to export from one tomogram, as a picks table.

    Parameters
    ----------
    store
        The project's tomograms.
    tomogram_id
        Which tomogram.
    what
        ``annotations`` (current state) or ``picks`` (read from the ``picks`` table).
    picker
        For picks: whose (default: the latest picker with picks on this tomogram).
    threshold
        For picks: keep scores at or above it.
    status
        For picks: ``accepted`` (only those) or ``all`` (all but the rejected ones).

    Returns
    -------
    pandas.DataFrame
        ``class`` (1-based rank of the class among the project's classes), ``name``,
        ``x, y, z`` (voxels) and, for picks, ``score``.
    """
    store.record(tomogram_id)
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(WHAT)}, not {what!r}")
    ranks = {c["id"]: (i + 1, c["name"]) for i, c in enumerate(store.classes())}
    if what == "annotations":
        rows = [
            (*ranks[a["class_id"]], a["x"], a["y"], a["z"], None)
            for a in store.annotations(tomogram_id)
        ]
        return pd.DataFrame(rows, columns=COLUMNS).drop(columns="score")
    if status not in ("accepted", "all"):
        raise ValueError(f"status must be accepted or all, not {status!r}")
    if picker is None:
        picker = latest_picker(store, tomogram_id)
    keep = "status = 'accepted'" if status == "accepted" else "status != 'rejected'"
    sql = f"SELECT class_id, x, y, z, score FROM picks WHERE {keep} "
    sql += "AND tomogram_id = ? AND picker_id = ? "
    args: list = [int(tomogram_id), picker]
    if threshold is not None:
        sql += "AND score >= ? "
        args.append(float(threshold))
    picked = store.conn.execute(sql + "ORDER BY score DESC, id", args).fetchall()
    rows = [(*ranks[p["class_id"]], p["x"], p["y"], p["z"], p["score"]) for p in picked]
    return pd.DataFrame(rows, columns=COLUMNS)


def export_file(
    store: TomogramStore,
    tomogram_ids: list[int],
    fmt: str,
    what: str = "annotations",
    picker: int | None = None,
    threshold: float | None = None,
    status: str = "all",
    tilt_series_pixel_size_A: float | None = None,
    binning: float | None = None,
) -> tuple[bytes, str]:
    """The export file of one tomogram, or of several in one file.

    One tomogram: the file ``write_picks`` writes, named ``NAME_WHAT.EXT``. Several: RELION
    4/5 STAR files are joined into one particle table (``rlnTomoName`` tells them apart),
    CSV gets a ``tomo`` column; ``.coords`` holds one tomogram only.

    Returns
    -------
    (bytes, str)
        The file's content and its name.

    Raises
    ------
    InputError
        What ``write_picks`` refuses (RELION 4 without the binning of a binned tomogram,
        RELION 5 without a voxel size), ``.coords`` for several tomograms.
    """
    from cryoscout.io.coords import FORMATS, write_picks
    from cryoscout.io.validate import safe_filename

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not tomogram_ids:
        raise ValueError("no tomograms to export")
    if fmt == "coords" and len(tomogram_ids) > 1:
        raise ValueError(".coords files hold one tomogram: export them one by one")
    records = [store.record(i) for i in tomogram_ids]
    with tempfile.TemporaryDirectory(prefix="cryoscout-export-") as tmp:
        parts = []
        for t in records:
            picks = table(store, t["id"], what, picker, threshold, status)
            name = safe_filename(f"{t['name']}_{what}{EXTENSION[fmt]}")
            path = write_picks(
                Path(tmp) / f"{t['id']}-{name}",
                picks,
                fmt,
                tomo_name=t["name"],
                voxel_size_A=t["voxel_size_A"],
                shape=(t["nz"], t["ny"], t["nx"]),
                tilt_series_pixel_size_A=tilt_series_pixel_size_A,
                binning=binning,
            )
            parts.append((t, path, name))
        if len(parts) == 1:
            return parts[0][1].read_bytes(), parts[0][2]
        out = Path(tmp) / f"all_{what}{EXTENSION[fmt]}"
        if fmt == "csv":
            frames = [pd.read_csv(p).assign(tomo=t["name"]) for t, p, _ in parts]
            pd.concat(frames, ignore_index=True).to_csv(out, index=False, float_format="%.4f")
        else:
            import starfile

            frames = [_particles(starfile.read(p)) for _, p, _ in parts]
            starfile.write({"particles": pd.concat(frames, ignore_index=True)}, out)
        return out.read_bytes(), out.name


def _particles(star) -> pd.DataFrame:
    return star["particles"] if isinstance(star, dict) else star


def export_copick(
    store: TomogramStore,
    what: str = "annotations",
    tomogram_ids: list[int] | None = None,
    config: str | None = None,
    user_id: str = "cryoscout",
    session_id: str = "0",
    picker: int | None = None,
    threshold: float | None = None,
    status: str = "all",
) -> dict:
    """Store annotations or picks as copick picks (Å) of ``user_id``/``session_id``.

    Parameters
    ----------
    config
        The copick project to write into (inside the allowed folders); default: each
        tomogram's own project (tomograms added from a copick project). The run is the
        tomogram's run, else its name (created when the project has no such run).
    tomogram_ids
        Default: every tomogram of the project (with ``config``) or every copick one.

    Returns
    -------
    dict
        ``{"written": {run: {class name: n}}, "config": path}`` (``config``: the
        project written, or the list of them when tomograms come from several).

    Raises
    ------
    InputError
        No copick project for a tomogram, no voxel size, a class the copick project
        does not know.
    """
    from cryoscout.io.copick_project import CopickTomogram, write_copick_picks

    target = str(store.project.check_input_path(config)) if config else None
    if tomogram_ids is None:
        rows = store.tomograms()
        tomogram_ids = [t["id"] for t in rows if target or t["source"] == "copick"]
    if not tomogram_ids:
        raise ValueError("no tomograms to export (none comes from a copick project: give config)")
    written: dict[str, dict[str, int]] = {}
    configs = []
    for tid in tomogram_ids:
        t = store.record(tid)
        path = target or t["copick_config"]
        if path is None:
            raise InputError(
                t["path"], "not from a copick project: give the copick config to write into"
            )
        if not t["voxel_size_A"]:
            raise InputError(t["path"], "no voxel size, so no Å coordinates for copick")
        run = t["copick_run"] if t["copick_run"] and path == t["copick_config"] else t["name"]
        shape = (t["nz"], t["ny"], t["nx"])
        ref = CopickTomogram(
            Path(path), run, float(t["voxel_size_A"]), t["copick_tomo_type"] or "", shape
        )
        picks = table(store, tid, what, picker, threshold, status)
        write_copick_picks(ref, picks, user_id=user_id, session_id=session_id)
        counts = picks["name"].value_counts()
        written[run] = {str(k): int(v) for k, v in counts.items()}
        if path not in configs:
            configs.append(path)
    return {"written": written, "config": configs[0] if len(configs) == 1 else configs}
