"""The example project of ``cryoscout app --example``: a simulated 12-grid cassette."""

from __future__ import annotations

import os
from pathlib import Path

from cryoscout.app.project import Project

#: (name, seed, defect rates): a cassette with a few good grids and several bad ones.
CASSETTE = (
    ("grid01", 101, {}),
    ("grid02", 102, {}),
    ("grid03-cracked", 103, {"crack_rate": 0.45}),
    ("grid04", 104, {}),
    ("grid05-contaminated", 105, {"contamination_rate": 0.6, "specks": 1.5}),
    ("grid06-broken", 106, {"broken_rate": 0.35}),
    ("grid07", 107, {}),
    ("grid08-thick-ice", 108, {"ice_mean_nm": 300.0}),
    ("grid09-dry", 109, {"dry_rate": 0.3}),
    ("grid10", 110, {}),
    ("grid11-cracked", 111, {"crack_rate": 0.3, "broken_rate": 0.2}),
    ("grid12-thin-ice", 112, {"ice_mean_nm": 80.0}),
)


def example_atlases(
    data_dir: str | os.PathLike, n: int = len(CASSETTE), tiles: int = 2, tile_size: int = 768
) -> list[Path]:
    """Simulate the cassette's EPU atlases into ``data_dir`` (skipping those already there).

    Small atlases (2 x 2 tiles of 768 px, ~80 squares each) keep the first start
    of the example within a couple of minutes on two CPU cores.

    Returns
    -------
    list of pathlib.Path
        The ``Atlas.dm`` files, in cassette order.
    """
    from cryoscout.progress import track
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas, write_simulated_atlas

    out = []
    for name, seed, rates in track(CASSETTE[:n], "simulating the cassette", unit="grid"):
        folder = Path(data_dir) / name
        done = folder / "Atlas.dm"
        if not done.is_file():
            config = AtlasConfig(tiles_x=tiles, tiles_y=tiles, tile_size=tile_size, **rates)
            done = Path(write_simulated_atlas(simulate_atlas(config, seed=seed), folder, "epu"))
        out.append(done)
    return out


def make_example_project(project_dir: str | os.PathLike, n: int = len(CASSETTE)) -> Project:
    """Create the example project (once): simulate the atlases and queue their screening."""
    project = Project(project_dir)
    if not project.atlas_ids():
        for path in example_atlases(project.path / "data", n):
            project.add_atlas(str(path), name=path.parent.name)
    return project
