"""Draw docs/simulated_atlas.png: a simulated 300-mesh atlas and a few squares up close.

Run from the repository root:

    $ python benchmarks/figure_simulated_atlas.py --seed 2 --out docs/simulated_atlas.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/simulated_atlas.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from cryoscout.io.atomic import atomic_path
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas

    cfg = AtlasConfig(mesh=300, pixel_size_nm=500.0, rotation_deg=None)
    sim = simulate_atlas(cfg, seed=args.seed)
    img = sim.image
    lo, hi = np.percentile(img, [0.5, 99.8])
    t = sim.truth[sim.truth["full"] == 1]
    # show squares near the grid centre, where the eye goes first
    gx, gy = sim.grid_centre_px
    t = t.assign(_d=np.hypot(t["x_px"] - gx, t["y_px"] - gy)).sort_values("_d")
    picks = {
        "broken film": t[t["broken_fraction"].between(0.3, 0.9)],
        "contamination": t[t["contamination_fraction"] > 0.1],
        "cracks": t[(t["crack_fraction"] > 0.015) & (t["broken_fraction"] == 0)],
        "good (overall 4)": t[t["overall"] == 4],
    }
    half = int(0.75 * sim.lattice.pitch_um / (sim.pixel_size_A / 1e4))

    fig = plt.figure(figsize=(13, 6.6), dpi=110)
    ax = fig.add_axes([0.0, 0.0, 0.5, 0.94])
    step = max(1, img.shape[0] // 1200)
    ax.imshow(img[::step, ::step], cmap="gray", vmin=lo, vmax=hi, interpolation="lanczos")
    ax.set_title(
        f"simulated 300-mesh atlas: {cfg.tiles_x}x{cfg.tiles_y} tiles of {cfg.tile_size} px, "
        f"{cfg.pixel_size_nm:.0f} nm/px (seed {args.seed})",
        fontsize=10,
    )
    ax.axis("off")
    for k, (name, rows) in enumerate(picks.items()):
        if rows.empty:
            continue
        r = rows.iloc[0]
        x, y = round(r.x_px), round(r.y_px)
        sc = {name: int(r[name]) for name in ("brightness", "squareness", "cracking")}
        sc |= {name: int(r[name]) for name in ("contamination", "overall")}
        ax.add_patch(
            Rectangle(
                ((x - half) / step, (y - half) / step),
                2 * half / step,
                2 * half / step,
                fill=False,
                ec="tab:orange",
                lw=1.2,
            )
        )
        ax.text((x + half) / step, (y - half) / step, str(k + 1), color="tab:orange", fontsize=9)
        sub = fig.add_axes([0.52 + 0.24 * (k % 2), 0.49 - 0.475 * (k // 2), 0.22, 0.37])
        crop = img[max(y - half, 0) : y + half, max(x - half, 0) : x + half]
        sub.imshow(crop, cmap="gray", vmin=lo, vmax=hi)
        sub.set_title(
            f"{k + 1}: {name}\nbrightness {sc['brightness']}  squareness {sc['squareness']}  "
            f"cracking {sc['cracking']}\ncontamination {sc['contamination']}  "
            f"overall {sc['overall']}",
            fontsize=8,
        )
        sub.axis("off")
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png")
    print(args.out)


if __name__ == "__main__":
    main()
