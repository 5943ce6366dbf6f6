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
    try:
        import copick
    except ImportError:
        raise InputError(
            config, "reading a copick project needs copick: pip install 'cryoscout[copick]'"
        ) from None
    if not config.is_file():
        raise InputError(config, "no such file")
    try:
        root = copick.from_file(str(config))
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
