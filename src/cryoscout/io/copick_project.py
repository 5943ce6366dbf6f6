"""Picks from a copick project (the layout of the CZII challenge data), via the copick library.

A copick project is a JSON configuration naming the particle types (``pickable_objects``
with a ``name``, an integer ``label`` and a ``radius`` in Å) and where the runs
(tomograms) and their picks live. Each set of picks belongs to a run, a particle type, a
``user_id`` and a ``session_id``; the challenge's ground truth is user ``curation``,
session ``0``. Coordinates and radii stay in Å, which the CZII score takes as they are.

Needs the optional ``copick`` package (``pip install 'cryoscout[copick]'``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.errors import InputError


@dataclass
class CopickPicks:
    """Picks of one user/session over all runs of a copick project.

    Attributes
    ----------
    table
        ``class`` (the object's label), ``name``, ``x, y, z`` (Å), ``tomo`` (run name).
    names
        ``{label: name}`` of the project's particle types.
    radius_A
        ``{label: radius in Å}`` of the particle types that have one.
    """

    table: pd.DataFrame
    names: dict[int, str]
    radius_A: dict[int, float]


def read_copick_picks(
    config: str | os.PathLike, user_id: str, session_id: str | None = None
) -> CopickPicks:
    """Read every particle pick of ``user_id`` (and ``session_id``) from a copick project.

    Parameters
    ----------
    config
        The project's JSON configuration file.
    user_id
        Whose picks (``curation`` for the CZII ground truth).
    session_id
        Which session; None takes all sessions of the user.

    Returns
    -------
    CopickPicks

    Raises
    ------
    InputError
        copick not installed, an unreadable configuration, or no picks of that user.
    """
    config = Path(config)
    root = _copick_root(config)
    try:
        objects = [o for o in root.pickable_objects if o.is_particle]
        runs = list(root.runs)
    except Exception as exc:
        raise InputError(config, f"not a readable copick configuration ({exc})") from None
    names = {int(o.label): str(o.name) for o in objects}
    label = {name: c for c, name in names.items()}
    radius = {int(o.label): float(o.radius) for o in objects if o.radius}
    frames = []
    for run in runs:
        for picks in run.get_picks(user_id=user_id, session_id=session_id):
            name = picks.pickable_object_name
            if name not in label:
                continue  # not a particle type (membranes, ...)
            points, _ = picks.numpy()
            points = np.asarray(points, float).reshape(-1, 3)
            frames.append(
                pd.DataFrame(
                    {
                        "class": label[name],
                        "name": name,
                        "x": points[:, 0],
                        "y": points[:, 1],
                        "z": points[:, 2],
                        "tomo": str(run.name),
                    }
                )
            )
    who = user_id if session_id is None else f"{user_id}/{session_id}"
    if not frames:
        raise InputError(config, f"no particle picks of {who} in {len(runs)} runs")
    table = pd.concat(frames, ignore_index=True)
    return CopickPicks(table=table, names=names, radius_A=radius)


@dataclass
class CopickTomogram:
    """One tomogram of a copick project: a run's tomogram at one voxel spacing."""

    config: Path
    run: str
    voxel_size_A: float
    tomo_type: str
    shape: tuple[int, int, int]  # (z, y, x)


def _copick_root(config: str | os.PathLike):
    config = Path(config)
    try:
        import copick
    except ImportError:
        raise InputError(
            config, "reading a copick project needs copick: pip install 'cryoscout[copick]'"
        ) from None
    if not config.is_file():
        raise InputError(config, "no such file")
    try:
        return copick.from_file(str(config))
    except Exception as exc:
        raise InputError(config, f"not a readable copick configuration ({exc})") from None


def _one(config: Path, what: str, run: str, found: dict, wanted):
    """The item ``wanted`` of ``found`` (or the only one); a clear error otherwise."""
    if wanted is not None:
        if wanted not in found:
            have = ", ".join(sorted(map(str, found))) or "none"
            raise InputError(config, f"run {run} has no {what} {wanted} (has {have})")
        return found[wanted]
    if len(found) != 1:
        have = ", ".join(sorted(map(str, found))) or "none"
        raise InputError(config, f"run {run}: choose a {what} (has {have})")
    return next(iter(found.values()))


def list_copick_tomograms(
    config: str | os.PathLike, voxel_size_A: float | None = None, tomo_type: str | None = None
) -> list[CopickTomogram]:
    """The tomograms of every run of a copick project, one per run.

    Parameters
    ----------
    config
        The project's JSON configuration file.
    voxel_size_A
        Which voxel spacing (Å); needed when a run has several.
    tomo_type
        Which reconstruction (``denoised``, ``wbp``...); needed when there are several.

    Raises
    ------
    InputError
        copick missing, an unreadable configuration, no runs, or a run without the
        requested (or a single) voxel spacing and tomogram type.
    """
    import zarr

    config = Path(config)
    root = _copick_root(config)
    out = []
    for run in root.runs:
        spacings = {float(v.voxel_size): v for v in run.voxel_spacings}
        vs = _one(config, "voxel spacing", run.name, spacings, voxel_size_A)
        tomos = {str(t.tomo_type): t for t in vs.tomograms}
        tomo = _one(config, "tomogram type", run.name, tomos, tomo_type)
        shape = tuple(int(n) for n in zarr.open(tomo.zarr(), mode="r")["0"].shape)
        out.append(
            CopickTomogram(config, str(run.name), float(vs.voxel_size), tomo.tomo_type, shape)
        )
    if not out:
        raise InputError(config, "the copick project has no runs")
    return out


@dataclass
class CopickParticleType:
    """A particle type (``pickable_object`` with ``is_particle``) of a copick project."""

    name: str
    label: int
    radius_A: float | None
    colour: str | None  # "#rrggbb"


def copick_particle_types(config: str | os.PathLike) -> list[CopickParticleType]:
    """The particle types a copick project declares, in its order.

    Raises
    ------
    InputError
        copick missing or an unreadable configuration.
    """
    config = Path(config)
    root = _copick_root(config)
    out = []
    try:
        for o in root.pickable_objects:
            if not o.is_particle:
                continue
            rgba = list(o.color or [])[:3]
            colour = "#" + "".join(f"{int(v):02x}" for v in rgba) if len(rgba) == 3 else None
            radius = float(o.radius) if o.radius else None
            out.append(CopickParticleType(str(o.name), int(o.label), radius, colour))
    except Exception as exc:
        raise InputError(config, f"not a readable copick configuration ({exc})") from None
    return out


def open_copick_tomogram(tomo: CopickTomogram):
    """The full-resolution ``(z, y, x)`` array of a copick tomogram, read lazily (zarr)."""
    import zarr

    run = _copick_root(tomo.config).get_run(tomo.run)
    vs = run.get_voxel_spacing(tomo.voxel_size_A)
    found = vs.get_tomograms(tomo.tomo_type)
    if not found:
        raise InputError(tomo.config, f"run {tomo.run} has no tomogram {tomo.tomo_type}")
    return zarr.open(found[0].zarr(), mode="r")["0"]


def write_copick_picks(
    tomo: CopickTomogram, picks: pd.DataFrame, user_id: str, session_id: str
) -> None:
    """Store picks (``name, x, y, z`` in voxels, ``score``) in a copick project, in Å.

    One copick pick set per particle type of the project, replaced when it exists; picks
    of a name the project does not know raise :class:`InputError`. A run the project does
    not have yet is created.
    """
    root = _copick_root(tomo.config)
    known = {str(o.name) for o in root.pickable_objects}
    unknown = sorted(set(picks["name"]) - known) if len(picks) else []
    if unknown:
        raise InputError(
            tomo.config, f"the project has no particle type {unknown[0]!r} (the model's class)"
        )
    run = root.get_run(tomo.run) or root.new_run(tomo.run)  # the app exports MRC tomograms too
    for name, group in picks.groupby("name"):
        points = group[["x", "y", "z"]].to_numpy(float) * tomo.voxel_size_A
        ps = run.new_picks(str(name), session_id=session_id, user_id=user_id, exist_ok=True)
        scores = group["score"].to_numpy(float) if "score" in group else None
        ps.from_numpy(points, scores=scores)
        ps.store()
