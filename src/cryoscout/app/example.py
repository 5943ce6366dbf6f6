"""The example project of ``cryoscout app --example``: a simulated 12-grid cassette and
two simulated tomograms with their particle classes (no annotations: the truth is kept
aside as ``data/truth_TS_01.csv`` ... for a user to import or compare with)."""

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


#: (name, seed) of the example tomograms.
TOMOGRAMS = (("TS_01", 1), ("TS_02", 2))
#: The README's picking settings (160 x 160 voxels of 20 Å, 70 particles), 80 sections
#: thick, with two procedural shapes so that no template maps are needed.
TOMO_SHAPE = (80, 160, 160)
TOMO_VOXEL_A = 20.0
TOMO_PARTICLES = 70
TOMO_SHAPES = ("sphere", "ring")
TOMO_SNR = 0.3


def example_tomograms(data_dir: str | os.PathLike, n: int = len(TOMOGRAMS)) -> list[Path]:
    """Simulate the example tomograms into ``data_dir`` (skipping those already there).

    Each goes to ``data_dir/tomograms/NAME/`` (the simulator's ``tomogram.mrc``,
    ``particles.csv``, ``classes.csv``...); its true particles are also written beside
    them as ``data_dir/truth_NAME.csv`` (``class, name, x, y, z``), which the app imports
    as annotations. About 8 s per tomogram on two busy cores.

    Returns
    -------
    list of pathlib.Path
        The simulation folders, in order.
    """
    import pandas as pd

    from cryoscout.io.coords import write_picks
    from cryoscout.progress import track
    from cryoscout.simulate.tomogram import (
        TomogramConfig,
        simulate_tomogram,
        write_simulated_tomogram,
    )

    out = []
    for name, seed in track(TOMOGRAMS[:n], "simulating the example tomograms", unit="tomogram"):
        folder = Path(data_dir) / "tomograms" / name
        truth = Path(data_dir) / f"truth_{name}.csv"
        if not (folder / "tomogram.mrc").is_file() or not truth.is_file():
            config = TomogramConfig(
                shape=TOMO_SHAPE,
                voxel_size_A=TOMO_VOXEL_A,
                n_particles=TOMO_PARTICLES,
                shapes=TOMO_SHAPES,
                # Clearer than the simulator's default SNR 0.1, so that a newcomer sees
                # particles to click (best with the viewer's low-pass at 1).
                snr=TOMO_SNR,
            )
            write_simulated_tomogram(simulate_tomogram(config, seed=seed), folder)
            particles = pd.read_csv(folder / "particles.csv")
            write_picks(truth, particles[["class", "name", "x", "y", "z"]], "csv")
        out.append(folder)
    return out


def add_example_tomograms(project: Project, n: int = len(TOMOGRAMS)) -> None:
    """Add the example tomograms and their particle classes (radii from ``classes.csv``)."""
    import pandas as pd

    from cryoscout.app.tomograms import TomogramStore

    store = TomogramStore(project)
    folders = example_tomograms(project.path / "data", n)
    known = {c["name"] for c in store.classes()}
    for row in pd.read_csv(folders[0] / "classes.csv").itertuples():
        if row.name not in known:
            store.add_class(str(row.name), radius_vox=float(row.radius_vox))
    for folder in folders:
        store.add(str(folder / "tomogram.mrc"), name=folder.name)


def make_example_project(
    project_dir: str | os.PathLike, n: int = len(CASSETTE), tomograms: int = len(TOMOGRAMS)
) -> Project:
    """Create the example project (once): simulate the atlases and queue their screening,
    and add ``tomograms`` simulated tomograms with their particle classes."""
    project = Project(project_dir)
    if not project.atlas_ids():
        for path in example_atlases(project.path / "data", n):
            project.add_atlas(str(path), name=path.parent.name)
    if tomograms and not project.conn.execute("SELECT 1 FROM tomograms").fetchone():
        add_example_tomograms(project, tomograms)
    return project
