"""Small copick projects on disk for the tests (local filesystem overlay, no network)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest


def new_copick_project(
    root: Path, objects: Iterable[tuple[str, float]], config_name: str = "config.json"
):
    """An empty copick project under ``root`` (overlay in ``root/overlay``).

    Parameters
    ----------
    root
        The folder (created if needed).
    objects
        ``(name, radius in Å)`` of each pickable object, labelled 1, 2, ... in order;
        radius 0 makes it a non-particle (e.g. a membrane).
    config_name
        File name of the config JSON in ``root``.

    Returns
    -------
    tuple
        The config path and the opened copick root. Skips the test without copick.
    """
    copick = pytest.importorskip("copick")
    config = {
        "name": "tiny", "description": "", "version": "1.0.0", "config_type": "filesystem",
        "overlay_root": f"local://{root / 'overlay'}", "overlay_fs_args": {"auto_mkdir": True},
        "pickable_objects": [
            {"name": name, "is_particle": radius > 0, "label": i + 1, "radius": radius,
             "color": [0, 255, 0, 255]}
            for i, (name, radius) in enumerate(objects)
        ],
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    path = root / config_name
    path.write_text(json.dumps(config))
    return path, copick.from_file(str(path))


def copick_project(
    root: Path, objects=("ribosome",), runs=("TS_1", "TS_2"), voxel_size_A: float = 10.0
) -> Path:
    """A copick project with a random 12 x 24 x 28 ``denoised`` tomogram per run (radius 120 Å)."""
    path, project = new_copick_project(root, [(name, 120) for name in objects], "copick.json")
    rng = np.random.default_rng(2)
    for run_name in runs:
        vs = project.new_run(run_name).new_voxel_spacing(voxel_size_A)
        vs.new_tomogram("denoised").from_numpy(rng.normal(size=(12, 24, 28)).astype(np.float32))
    return path
