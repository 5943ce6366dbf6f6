"""Build extraction folders of simulated atlases for training and Table 1.

Each atlas gets its own varied configuration (mesh, lattice rotation, pixel
size, defect rates, scorer noise), drawn from ``--seed``, is simulated with
``cryoscout.simulate.atlas`` and extracted. When ``cryoscout.atlas.extract``
is available the squares come from the real extraction (template matching on
the image); otherwise (``--crop-truth``, or extraction not yet built) they are
cropped around the true square centres with the same size and field of view
(one lattice pitch), axis-aligned. The output is one folder per atlas with
``squares.csv``, ``squares.mrcs`` and ``labels.csv``, as ``cryoscout extract``
writes them.

Example::

    $ python benchmarks/make_screening_data.py -o data/screening --atlases 5 --seed 0
    $ python benchmarks/make_screening_data.py -o data/cracks --atlases 6 --seed 1 --crack-scale 2.5
    $ python benchmarks/make_screening_data.py -o data/wide --atlases 12 --seed 5 --wide
    $ python benchmarks/make_screening_data.py -o data/lowdose --atlases 6 --seed 20 --wide \\
        --dose 45 90
    $ python benchmarks/make_screening_data.py -o data/thin --atlases 6 --seed 30 --wide \\
        --ice 40 80
    $ python benchmarks/make_screening_data.py -o data/paper --atlases 12 --size 640 \\
        --tiles 10 --square-px 600 680 --jobs 12
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.io.atomic import write_text
from cryoscout.io.mrc import write_mrc
from cryoscout.progress import track
from cryoscout.screening.data import resize_stack
from cryoscout.screening.model import SCORES
from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas
from cryoscout.simulate.grid import FILM_SPECS, MESH_SPECS


def atlas_config(
    rng: np.random.Generator,
    tiles: int,
    crack_scale: float = 1.0,
    defect_scale: float = 1.0,
    wide: bool = False,
    dose: tuple[float, float] | None = None,
    ice: tuple[float, float] | None = None,
) -> AtlasConfig:
    """A varied atlas configuration: the diversity a model must not overfit to.

    ``crack_scale`` and ``defect_scale`` multiply the crack rate and the other
    defect rates (broken, contamination, dry, bent bars), so that rare defects
    can be made common enough to learn; 1 keeps the usual mix. ``wide`` also
    varies the holey film (every type the simulator knows) and widens pixel
    sizes to 350-750 nm, ice to 50-200 nm and the dose to 50-250 counts;
    ``dose`` (low, high) overrides the dose range (e.g. to make low-dose atlases,
    where shot noise hides cracks, common enough to learn) and ``ice`` (low,
    high) the range of the atlas's mean ice thickness in nm (e.g. thin-ice
    atlases, where the rubric's ice quality turns on a few nm).
    """
    scale = rng.uniform(0.5, 2.0) * defect_scale
    mesh = int(rng.choice([200, 300, 300, 400]))
    film = str(rng.choice(sorted(FILM_SPECS))) if wide else "R1.2/1.3"
    return AtlasConfig(
        mesh=mesh,
        film=film,
        pixel_size_nm=float(rng.uniform(*((350, 750) if wide else (400, 650)))),
        tiles_x=tiles,
        tiles_y=tiles,
        ice_mean_nm=float(rng.uniform(*(ice or ((50, 200) if wide else (60, 180))))),
        broken_rate=float(0.08 * scale),
        crack_rate=float(np.clip(0.12 * rng.uniform(0.5, 2.5) * crack_scale, 0, 0.5)),
        contamination_rate=float(np.clip(0.25 * rng.uniform(0.5, 2.0) * defect_scale, 0, 0.6)),
        dry_rate=float(0.05 * rng.uniform(0.5, 2.0) * defect_scale),
        bent_bar_rate=float(0.03 * scale),
        dose=float(rng.uniform(*(dose or ((50, 250) if wide else (60, 200))))),
        label_noise=0.3,
    )


def crop_truth(sim, size: int, fov: float = 1.0) -> tuple[np.ndarray, pd.DataFrame]:
    """Axis-aligned crops of one lattice pitch around each full square's true centre."""
    full = sim.full_squares.reset_index(drop=True)
    pitch_px = MESH_SPECS[sim.config.mesh][0] / (sim.config.pixel_size_nm / 1000.0)
    half = round(fov * pitch_px / 2)
    image = sim.montage.image  # as the extraction code receives it: flat-fielded
    pad = np.pad(image, half, mode="constant", constant_values=float(image.min()))
    crops = []
    for x, y in zip(full["x_px"], full["y_px"], strict=True):
        r, c = round(y) + half, round(x) + half
        crops.append(pad[r - half : r + half, c - half : c + half])
    stack = resize_stack(np.stack(crops).astype(np.float32), size)
    table = full[["square_id", "x_px", "y_px", "stage_x_um", "stage_y_um", "full"]].copy()
    return stack, table


def extract(sim, size: int, crop: bool) -> tuple[np.ndarray, pd.DataFrame, str]:
    """Squares and their table: real extraction, or crops at the truth centres (``crop``)."""
    if crop:
        stack, table = crop_truth(sim, size)
        return stack, table, "truth-crop"
    from cryoscout.atlas.extract import extract_squares

    ex = extract_squares(sim.montage, size=size, fov=1.0)
    return np.asarray(ex.stack, np.float32), ex.table.copy(), "extract_squares"


def match_labels(table: pd.DataFrame, truth: pd.DataFrame, max_dist: float) -> pd.DataFrame:
    """``square_id`` + five scores of the nearest true square within ``max_dist`` pixels."""
    from scipy.spatial import cKDTree

    tree = cKDTree(truth[["x_px", "y_px"]].to_numpy())
    dist, idx = tree.query(table[["x_px", "y_px"]].to_numpy())
    ok = dist <= max_dist
    out = truth.iloc[idx[ok]][list(SCORES)].reset_index(drop=True)
    out.insert(0, "square_id", table["square_id"].to_numpy()[ok])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--atlases", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--tiles", type=int, default=5)
    p.add_argument("--crack-scale", type=float, default=1.0, help="Crack rate multiplier.")
    p.add_argument("--defect-scale", type=float, default=1.0, help="Other defects' multiplier.")
    p.add_argument("--wide", action="store_true", help="Vary films; wider pixel sizes, ice, dose.")
    p.add_argument(
        "--dose",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="Dose range, counts per pixel (default 60-200, --wide 50-250).",
    )
    p.add_argument(
        "--ice",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="Range of the atlas's mean ice thickness, nm (default 60-180, --wide 50-200).",
    )
    p.add_argument(
        "--square-px",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="Draw the pixel size so that one lattice pitch spans LOW-HIGH pixels "
        "(the paper's 640 px squares: 600 680, with --tiles 10).",
    )
    p.add_argument("--crop-truth", action="store_true", help="Skip extraction; crop at truth.")
    p.add_argument("--jobs", type=int, default=1, help="Atlases built at once (processes).")
    args = p.parse_args()
    # Every configuration and seed is drawn first, so --jobs never changes the data.
    rng = np.random.default_rng(args.seed)
    work = []
    for i in range(args.atlases):
        cfg = atlas_config(
            rng, args.tiles, args.crack_scale, args.defect_scale, args.wide, args.dose, args.ice
        )
        seed = int(rng.integers(2**31))
        if args.square_px:
            pitch_um = MESH_SPECS[cfg.mesh][0]
            cfg = replace(cfg, pixel_size_nm=1000 * pitch_um / rng.uniform(*args.square_px))
        folder = args.out / f"atlas{i:02d}"
        if not (folder / "labels.csv").is_file():  # already built: rerunning resumes
            work.append((cfg, seed, folder, args.size, args.crop_truth))
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs) as pool:
            done = pool.map(build_atlas, *zip(*work, strict=True)) if work else []
            for line in track(done, "atlases", total=len(work), unit="atlas"):
                print(line, flush=True)
    else:
        for job in track(work, "atlases", unit="atlas"):
            print(build_atlas(*job), flush=True)


def build_atlas(cfg: AtlasConfig, seed: int, folder: Path, size: int, crop: bool) -> str:
    """Simulate one atlas, extract its squares and write its folder; return a summary line."""
    sim = simulate_atlas(cfg, seed=seed)
    stack, table, how = extract(sim, size, crop)
    pitch_px = MESH_SPECS[cfg.mesh][0] / (cfg.pixel_size_nm / 1000.0)
    labels = match_labels(table, sim.truth, max_dist=0.25 * pitch_px)
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / "squares.mrcs", stack, sim.pixel_size_A * pitch_px / size, True)
    write_text(folder / "squares.csv", table.to_csv(index=False))
    info = {"seed": seed, "extraction": how, "n_squares": len(table), **vars(cfg)}
    write_text(folder / "atlas.json", json.dumps(info, indent=1, default=str))
    write_text(folder / "labels.csv", labels.to_csv(index=False))  # last: marks complete
    return f"{folder}: {len(table)} squares ({how}), {len(labels)} labeled"


if __name__ == "__main__":
    main()
