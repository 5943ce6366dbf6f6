"""A physically grounded low-magnification atlas of a cryo-EM grid, with ground truth.

The simulator draws a 3.05 mm copper grid (200/300/400 mesh, rotated, with
rounded square openings and a holey film), covers it with vitreous ice whose
thickness varies smoothly over the grid and from square to square, adds
defects with known extent (broken film, cracks, contamination, dry squares,
bent bars), and images it tile by tile: Beer-Lambert transmission through ice
and film, near-opaque copper, a circular beam fall-off in every tile and
counting noise at a realistic dose. Every square gets the five scores of the
XCryoNet paper, derived from its true physical state.

Scores (0-4; the ``*_value`` columns of the truth table keep the continuous values)
-----------------------------------------------------------------------------------
brightness
    ``4 * (T - 0.25) / (0.90 - 0.25)`` clipped, with ``T`` the mean noise-free
    transmission over the opening (0.25 is about 550 nm of ice, 0.90 an empty
    square with its holey film).
squareness
    ``4 * (1 - 1.5 * (broken_fraction + bar_fraction))`` clipped: a square that
    lost half its film, or is half covered by a bent bar, scores <= 1.
cracking
    ``4 * (1 - exp(-crack_fraction / 0.02))``: one crack across a square
    (about 1% of its area) scores 2, several cracks 3-4.
contamination
    ``4 * (1 - exp(-contamination_fraction / 0.12))``: 5% covered scores 1-2,
    a third covered scores 4.
overall (the operator rubric)
    An operator wants ice thin enough to see particles but thick enough to
    hold them, an intact film and a clean surface. The ice quality ``q(t)``
    of the plateau thickness ``t`` rises from 0 (dry, < 10 nm) to 3 at 25 nm
    and 4 from 40 to 100 nm, then falls to 3 at 160 nm, 1.5 at 250 nm and 0
    from 400 nm. Then ``overall = min(q, squareness) - 0.75 * cracking -
    0.75 * contamination``, clipped to 0-4. A square is only as good as its
    worst flaw: broken, cracked or dirty squares drop however good their ice.

Each score is rounded to an integer like a human's, after adding Gaussian
noise of standard deviation ``label_noise`` (default 0) to mimic scorers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cryoscout.errors import InputError
from cryoscout.io.atlas_source import KnownSquare, Montage
from cryoscout.io.validate import check_memory
from cryoscout.progress import track
from cryoscout.simulate.defects import DefectRates, SquareDefects, render_defects, sample_defects
from cryoscout.simulate.grid import (
    FILM_SPECS,
    MESH_SPECS,
    Lattice,
    coverage_from_sdf,
    disc_coverage,
    hole_coverage,
    rounded_square_sdf,
)
from cryoscout.simulate.imaging import (
    COPPER_TRANSMISSION,
    beer_lambert,
    blend_tiles,
    expose,
    tile_layout,
    vignetting,
)

SCORES = ("brightness", "squareness", "cracking", "contamination", "overall")
OutputFormat = Literal["epu", "serialem", "mrc"]
FORMATS: tuple[str, ...] = ("epu", "serialem", "mrc")

#: Codes of :attr:`SimulatedAtlas.defect_map`.
DEFECT_CODES = {"none": 0, "broken": 1, "crack": 2, "contamination": 3, "bent_bar": 4}

_STRIP_ROWS = 256
_T_DARK, _T_BRIGHT = 0.25, 0.90  # brightness 0 and 4 (see the module docstring)


@dataclass
class AtlasConfig:
    """What to simulate. Defaults give a 5 x 5 atlas of a 300-mesh R1.2/1.3 grid.

    Attributes
    ----------
    mesh
        200, 300 or 400 (pitch 125/83/62 µm, bars 35/25/25 µm).
    film
        Holey film, a key of :data:`cryoscout.simulate.grid.FILM_SPECS`
        (``"R1.2/1.3"``, ``"R2/1"``...).
    pixel_size_nm
        Atlas pixel size (100-700 nm at 60x-210x).
    tiles_x, tiles_y, tile_size, overlap
        Montage layout: ``tiles_x`` x ``tiles_y`` square tiles of ``tile_size``
        pixels overlapping by the fraction ``overlap``.
    rotation_deg
        Lattice rotation in the image; ``None`` draws one at random.
    stage_rotation_deg
        Rotation between image and stage axes.
    stage_flip_y
        Stage y grows upwards while image rows grow downwards, as on most microscopes.
    grid_diameter_mm, mesh_diameter_mm
        The grid and its meshed area (beyond it the copper rim and clip ring are opaque).
    corner_radius_fraction
        Corner radius of the openings as a fraction of their side.
    film_thickness_nm
        Ice-equivalent thickness of the carbon or gold film between holes.
    mean_free_path_nm
        Beer-Lambert attenuation length of ice (about 400 nm at 300 kV).
    ice_mean_nm, ice_gradient, ice_blotting, ice_square_sigma
        Ice thickness: a median, a linear gradient across the grid (relative
        change from centre to rim), a low-frequency blotting pattern and a
        per-square log-normal spread (both relative).
    meniscus
        Relative extra thickness of ice at the bars.
    dose
        Counts per pixel through vacuum at the tile centre.
    vignetting
        Relative fall-off of the beam at the tile corners.
    read_noise
        Gaussian detector noise in counts.
    broken_rate, crack_rate, contamination_rate, dry_rate, bent_bar_rate
        Fraction of squares with each defect.
    specks
        Mean number of tiny ice crystals on every square (too few to score).
    label_noise
        Standard deviation (score units) of noise added to the scores before rounding.
    """

    mesh: int = 300
    film: str = "R1.2/1.3"
    pixel_size_nm: float = 500.0
    tiles_x: int = 5
    tiles_y: int = 5
    tile_size: int = 1024
    overlap: float = 0.1
    rotation_deg: float | None = None
    stage_rotation_deg: float = 0.0
    stage_flip_y: bool = True
    grid_diameter_mm: float = 3.05
    mesh_diameter_mm: float = 2.65
    corner_radius_fraction: float = 0.08
    film_thickness_nm: float = 60.0
    mean_free_path_nm: float = 400.0
    ice_mean_nm: float = 160.0
    ice_gradient: float = 0.5
    ice_blotting: float = 0.35
    ice_square_sigma: float = 0.35
    meniscus: float = 0.6
    dose: float = 120.0
    vignetting: float = 0.35
    read_noise: float = 1.0
    broken_rate: float = 0.08
    crack_rate: float = 0.12
    contamination_rate: float = 0.25
    dry_rate: float = 0.05
    bent_bar_rate: float = 0.03
    specks: float = 0.5
    label_noise: float = 0.0

    def validate(self) -> None:
        """Raise :class:`~cryoscout.errors.InputError` naming the first bad option."""
        checks = [
            ("mesh", self.mesh in MESH_SPECS, f"must be one of {sorted(MESH_SPECS)}"),
            ("film", self.film in FILM_SPECS, f"must be one of {sorted(FILM_SPECS)}"),
            ("pixel-size-nm", 10 <= self.pixel_size_nm <= 5000, "must be 10-5000 nm"),
            ("tiles", self.tiles_x >= 1 and self.tiles_y >= 1, "must be at least 1x1"),
            ("tile-size", 32 <= self.tile_size <= 8192, "must be 32-8192 px"),
            ("overlap", 0 <= self.overlap < 0.5, "must be in [0, 0.5)"),
            ("dose", self.dose > 0, "must be positive"),
            ("vignetting", 0 <= self.vignetting < 1, "must be in [0, 1)"),
            ("label-noise", self.label_noise >= 0, "must be >= 0"),
            ("mean-free-path-nm", self.mean_free_path_nm > 0, "must be positive"),
        ]
        for name in (
            "broken_rate",
            "crack_rate",
            "contamination_rate",
            "dry_rate",
            "bent_bar_rate",
        ):
            checks.append((name.replace("_", "-"), 0 <= getattr(self, name) <= 1, "must be 0-1"))
        for name, ok, problem in checks:
            if not ok:
                raise InputError(f"--{name}", f"{problem} (got {getattr(self, name, None)})")
        if self.mesh_diameter_mm > self.grid_diameter_mm:
            raise InputError("--mesh-diameter-mm", "must not exceed the grid diameter")
        # About ten float32/int32 montage-sized arrays live at once while simulating.
        step = self.tile_size * (1 - self.overlap)
        side_x = self.tile_size + step * (self.tiles_x - 1)
        side_y = self.tile_size + step * (self.tiles_y - 1)
        what = f"a {side_x:.0f} x {side_y:.0f} px atlas ({self.tiles_x}x{self.tiles_y} tiles)"
        check_memory("--tiles", what, 40.0 * side_x * side_y)


@dataclass
class SimulatedAtlas:
    """A simulated atlas and its ground truth.

    Attributes
    ----------
    image
        ``(H, W)`` float32 stitched montage in counts (overlaps feathered).
    tiles
        ``(tile_size, tile_size)`` float32 tiles, row by row.
    positions_px
        ``(n_tiles, 2)`` int top-left ``(x, y)`` of each tile in the montage.
    pixel_size_A
        Pixel size in Å.
    px_to_stage
        ``(2, 3)`` affine: ``[sx_um, sy_um] = px_to_stage @ [x_px, y_px, 1]``.
    truth
        One row per square that shows in the image (see :func:`simulate_atlas`).
    transmission
        ``(H, W)`` float32 noise-free transmission without vignetting.
    defect_map
        ``(H, W)`` uint8 defect codes (:data:`DEFECT_CODES`) where a defect
        covers more than half a pixel.
    config, seed
        What made it.
    lattice
        The grid's square lattice (µm, image frame).
    grid_centre_px
        ``(x, y)`` of the grid centre in montage pixels.
    """

    image: np.ndarray
    tiles: list[np.ndarray]
    positions_px: np.ndarray
    pixel_size_A: float
    px_to_stage: np.ndarray
    truth: pd.DataFrame
    transmission: np.ndarray
    defect_map: np.ndarray
    config: AtlasConfig
    seed: int
    lattice: Lattice = field(repr=False, default=None)  # type: ignore[assignment]
    grid_centre_px: tuple[float, float] = (0.0, 0.0)

    @functools.cached_property
    def montage(self) -> Montage:
        """The stitched image as the extraction code receives it.

        As :func:`cryoscout.atlas.stitch.stitch` makes it from the written tiles:
        each tile divided by the beam's fall-off estimated from the tiles, then
        blended (``image`` itself keeps the tiles as exposed).
        """
        from cryoscout.atlas.flatfield import flatten_tiles

        tiles, flat = flatten_tiles(self.tiles)
        shape = self.image.shape
        image = self.image if flat is None else blend_tiles(tiles, self.positions_px, shape)
        return Montage(image, self.pixel_size_A, self.px_to_stage)

    @property
    def full_squares(self) -> pd.DataFrame:
        """Rows of squares entirely inside the imaged area and the meshed area."""
        return self.truth[self.truth["full"] == 1]


def simulate_atlas(config: AtlasConfig | None = None, seed: int = 0) -> SimulatedAtlas:
    """Simulate a tiled low-magnification atlas of a cryo-EM grid.

    Parameters
    ----------
    config
        What to simulate; defaults to :class:`AtlasConfig()`.
    seed
        Seed of every random choice: the same seed and config give the same atlas.

    Returns
    -------
    SimulatedAtlas
        Montage, tiles, their positions, pixel-to-stage affine and the truth
        table with one row per visible square: ``square_id, x_px, y_px``
        (centre in the montage; may lie outside it for partial squares),
        ``stage_x_um, stage_y_um, full`` (1 when the whole opening is imaged
        and inside the meshed area), the five scores (integers 0-4, see the
        module docstring for the rubric), their continuous ``*_value``, and
        the physical state: ``ice_thickness_nm`` (plateau thickness, 0 when
        dry), ``transmission``, ``broken_fraction``, ``crack_fraction``,
        ``contamination_fraction``, ``bar_fraction``, ``dry``,
        ``visible_fraction``, lattice indices ``i, j``.

    Examples
    --------
    >>> sim = simulate_atlas(AtlasConfig(tiles_x=2, tiles_y=2, tile_size=256), seed=1)
    >>> sim.image.shape
    (486, 486)
    """
    cfg = config if config is not None else AtlasConfig()
    cfg.validate()
    streams = np.random.SeedSequence(seed).spawn(5)
    rng_geo, rng_ice, rng_def, _, rng_label = (np.random.default_rng(s) for s in streams)

    px = cfg.pixel_size_nm / 1000.0  # µm
    positions, (h, w) = tile_layout(cfg.tiles_x, cfg.tiles_y, cfg.tile_size, cfg.overlap)
    pitch, bar = MESH_SPECS[cfg.mesh]
    opening = pitch - bar
    half = opening / 2
    mesh_r = cfg.mesh_diameter_mm * 500.0  # µm

    # Geometry: the grid centre sits near the montage centre, the lattice anywhere.
    centre = np.array([(w - 1) * px / 2, (h - 1) * px / 2]) + rng_geo.uniform(-40, 40, 2)
    angle = np.deg2rad(
        rng_geo.uniform(0, 90) if cfg.rotation_deg is None else float(cfg.rotation_deg)
    )
    lat0 = Lattice(pitch, opening, cfg.corner_radius_fraction * opening, angle, (0.0, 0.0))
    e1, e2 = lat0.axes
    shift = rng_geo.uniform(-0.5, 0.5, 2) * pitch
    origin = centre + shift[0] * e1 + shift[1] * e2
    lattice = dataclasses.replace(lat0, origin_um=(float(origin[0]), float(origin[1])))
    hole_d, hole_p = FILM_SPECS[cfg.film]
    hole_angle = angle + np.deg2rad(rng_geo.normal(0, 1.5))
    hole_origin = tuple(rng_geo.uniform(0, hole_p, 2))
    stage_centre = rng_geo.uniform(-25, 25, 2)

    sq = _square_table(lattice, cfg, centre, mesh_r, px, w, h)
    n = len(sq)
    sq["ice_thickness_nm"] = _ice_thickness(rng_ice, cfg, sq, centre, mesh_r)
    rates = DefectRates(
        cfg.broken_rate,
        cfg.crack_rate,
        cfg.contamination_rate,
        cfg.dry_rate,
        cfg.bent_bar_rate,
        cfg.specks,
    )
    defects = [sample_defects(rng_def, rates, opening) for _ in range(n)]
    dry = np.array([d.dry for d in defects], dtype=bool)
    sq.loc[dry, "ice_thickness_nm"] = 0.0
    sq["dry"] = dry.astype(int)

    # Per-pixel rendering in strips of rows keeps the temporaries in cache.
    imin, imax, jmin, jmax = lattice.index_range(w * px, h * px)
    ni, nj = imax - imin + 1, jmax - jmin + 1
    flat = (sq["i"].to_numpy() - imin) * nj + (sq["j"].to_numpy() - jmin)
    tgrid = np.full(ni * nj, cfg.ice_mean_nm, dtype=np.float32)
    tgrid[flat] = sq["ice_thickness_nm"]
    to = np.empty((h, w), dtype=np.float32)  # transmission of whatever fills the opening
    od = np.empty((h, w), dtype=np.float32)  # fraction of the pixel that is open (not copper)
    trans = np.empty((h, w), dtype=np.float32)  # what the beam sees
    cell = np.empty((h, w), dtype=np.int32)  # flat lattice cell of each pixel
    area_geo = np.zeros(ni * nj)
    lit = np.zeros(ni * nj)
    film_t = float(beer_lambert(cfg.film_thickness_nm, cfg.mean_free_path_nm))
    copper = np.float32(COPPER_TRANSMISSION)
    xs = (np.arange(w, dtype=np.float32) * np.float32(px))[None, :]
    # lattice coordinates (in µm) are a row term plus a column term
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    ox, oy = lattice.origin_um
    u_x, v_x = (xs - ox) * ca, (xs - ox) * -sa
    menisc_len = np.float32(0.08 * opening)
    strips = range(0, h, _STRIP_ROWS)
    for y0 in track(strips, desc="simulate squares", total=len(strips), unit="strip"):
        y1 = min(y0 + _STRIP_ROWS, h)
        ys = (np.arange(y0, y1, dtype=np.float32) * np.float32(px))[:, None]
        du = u_x + (ys - oy) * sa
        dv = v_x + (ys - oy) * ca
        iu = np.rint(du * np.float32(1 / pitch))
        jv = np.rint(dv * np.float32(1 / pitch))
        du -= iu * np.float32(pitch)
        dv -= jv * np.float32(pitch)
        sd = rounded_square_sdf(du, dv, half, lattice.corner_radius_um)
        c = (iu.astype(np.int32) - imin) * nj + (jv.astype(np.int32) - jmin)
        cell[y0:y1] = c
        o = coverage_from_sdf(sd, px)
        o *= disc_coverage(xs, ys, tuple(centre), mesh_r, px)
        t = tgrid[c]
        t *= 1 + np.float32(cfg.meniscus) * np.exp(np.minimum(sd, 0) / menisc_len)
        holes = hole_coverage(xs, ys, hole_d, hole_p, hole_angle, hole_origin, px)
        tt = beer_lambert(t, cfg.mean_free_path_nm)
        tt *= film_t + holes * (1 - film_t)
        od[y0:y1] = o
        to[y0:y1] = tt
        trans[y0:y1] = o * (tt - copper) + copper
        area_geo += np.bincount(c.ravel(), weights=o.ravel(), minlength=ni * nj)
        lit += np.bincount(c.ravel(), weights=(o * tt).ravel(), minlength=ni * nj)

    defect_map = np.zeros((h, w), dtype=np.uint8)
    fractions = np.zeros((n, 4))  # broken, crack, contamination, bar
    todo = [k for k in range(n) if defects[k].any]
    cols = sq[["x_px", "y_px", "i", "j"]].to_numpy()
    for k in track(todo, desc="simulate defects", total=len(todo), unit="square"):
        fractions[k], lit[flat[k]] = _apply_defects(
            defects[k], cols[k], flat[k], lattice, cfg, px, (to, od, trans, cell, defect_map)
        )
    for col, vals in zip(
        ("broken_fraction", "crack_fraction", "contamination_fraction", "bar_fraction"),
        fractions.T,
        strict=True,
    ):
        sq[col] = vals
    with np.errstate(invalid="ignore", divide="ignore"):
        sq["transmission"] = np.where(area_geo[flat] > 0, lit[flat] / area_geo[flat], np.nan)
    del to, od, cell

    vig = vignetting((cfg.tile_size, cfg.tile_size), cfg.vignetting)
    tile_rngs = [np.random.default_rng(s) for s in streams[3].spawn(len(positions))]
    tiles = []
    ts = cfg.tile_size
    vig *= np.float32(cfg.dose)
    for (x, y), rng in track(
        list(zip(positions, tile_rngs, strict=True)), desc="expose tiles", unit="tile"
    ):
        expected = trans[y : y + ts, x : x + ts] * vig
        tiles.append(expose(expected, rng, cfg.read_noise))
    image = blend_tiles(tiles, positions, (h, w))

    a = _px_to_stage(px, cfg, centre, stage_centre)
    sx, sy = Montage(image, None, a).to_stage(sq["x_px"].to_numpy(), sq["y_px"].to_numpy())
    sq["stage_x_um"], sq["stage_y_um"] = sx, sy
    truth = _score(sq, cfg, rng_label)
    return SimulatedAtlas(
        image=image,
        tiles=tiles,
        positions_px=positions,
        pixel_size_A=cfg.pixel_size_nm * 10.0,
        px_to_stage=a,
        truth=truth,
        transmission=trans,
        defect_map=defect_map,
        config=cfg,
        seed=seed,
        lattice=lattice,
        grid_centre_px=(float(centre[0] / px), float(centre[1] / px)),
    )


def _square_table(
    lattice: Lattice, cfg: AtlasConfig, centre: np.ndarray, mesh_r: float, px: float, w: int, h: int
) -> pd.DataFrame:
    """Every square whose opening shows in the image, with its visible fraction."""
    imin, imax, jmin, jmax = lattice.index_range(w * px, h * px)
    ii, jj = np.meshgrid(np.arange(imin, imax + 1), np.arange(jmin, jmax + 1), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    cx, cy = lattice.centre_um(ii, jj)
    half = lattice.opening_um / 2
    # Sample points over the opening (edges included) to measure what is visible.
    g = np.linspace(-half, half, 25)
    gu, gv = np.meshgrid(g, g)
    keep = rounded_square_sdf(gu, gv, half, lattice.corner_radius_um) <= 1e-9
    gu, gv = gu[keep], gv[keep]
    e1, e2 = lattice.axes
    x = cx[:, None] + gu[None] * e1[0] + gv[None] * e2[0]
    y = cy[:, None] + gu[None] * e1[1] + gv[None] * e2[1]
    in_img = (x >= 0) & (x <= (w - 1) * px) & (y >= 0) & (y <= (h - 1) * px)
    in_mesh = np.hypot(x - centre[0], y - centre[1]) <= mesh_r
    vis = (in_img & in_mesh).mean(axis=1)
    sel = vis > 0.02
    sq = pd.DataFrame(
        {
            "i": ii[sel],
            "j": jj[sel],
            "x_px": cx[sel] / px,
            "y_px": cy[sel] / px,
            "visible_fraction": vis[sel],
            "full": (vis[sel] >= 1.0).astype(int),
        }
    )
    # Number squares in reading order (rows of the image, then columns).
    sq = sq.sort_values(["y_px", "x_px"], kind="stable").reset_index(drop=True)
    sq.insert(0, "square_id", np.arange(1, len(sq) + 1))
    return sq


def _ice_thickness(
    rng: np.random.Generator, cfg: AtlasConfig, sq: pd.DataFrame, centre: np.ndarray, mesh_r: float
) -> np.ndarray:
    """Plateau ice thickness (nm) per square: gradient x blotting pattern x per-square spread."""
    x = sq["x_px"].to_numpy() * cfg.pixel_size_nm / 1000 - centre[0]
    y = sq["y_px"].to_numpy() * cfg.pixel_size_nm / 1000 - centre[1]
    ang = rng.uniform(0, 2 * np.pi)
    log_t = cfg.ice_gradient * (x * np.cos(ang) + y * np.sin(ang)) / mesh_r
    # Blotting leaves patches a few hundred µm to a millimetre across.
    k = 8
    wl = rng.uniform(300, 1500, k)
    th = rng.uniform(0, 2 * np.pi, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    amp = cfg.ice_blotting * np.sqrt(2.0 / k)
    for wl_i, th_i, ph_i in zip(wl, th, ph, strict=True):
        log_t = log_t + amp * np.cos(
            2 * np.pi * (x * np.cos(th_i) + y * np.sin(th_i)) / wl_i + ph_i
        )
    log_t = log_t + rng.normal(0, cfg.ice_square_sigma, len(sq))
    return cfg.ice_mean_nm * np.exp(log_t)


def _apply_defects(
    d: SquareDefects,
    where: np.ndarray,
    cell_id: int,
    lattice: Lattice,
    cfg: AtlasConfig,
    px: float,
    maps: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, float]:
    """Draw one square's defects into the maps in place.

    ``where`` is ``(x_px, y_px, i, j)`` of the square; ``maps`` are ``to, od,
    trans, cell, defect_map``. Returns the true fractions (broken, crack,
    contamination, bar) of its opening and the new sum of ``od * to`` over it.
    """
    to, od, trans, cell, defect_map = maps
    x_c, y_c, i, j = where
    h, w = to.shape
    half = lattice.opening_um / 2
    c, s = abs(np.cos(lattice.angle_rad)), abs(np.sin(lattice.angle_rad))
    r = (half * (c + s)) / px + 2
    x0, x1 = max(int(x_c - r), 0), min(int(x_c + r) + 2, w)
    y0, y1 = max(int(y_c - r), 0), min(int(y_c + r) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return np.zeros(4), 0.0
    win = (slice(y0, y1), slice(x0, x1))
    xs = (np.arange(x0, x1) * px)[None, :]
    ys = (np.arange(y0, y1) * px)[:, None]
    u, v = lattice.coords(xs, ys)
    du = (u - i) * lattice.pitch_um
    dv = (v - j) * lattice.pitch_um
    mine = cell[win] == cell_id
    sdf = rounded_square_sdf(du, dv, half, lattice.corner_radius_um)
    opening = coverage_from_sdf(sdf, px) * mine
    area = opening.sum()
    if area <= 0:
        return np.zeros(4), 0.0
    m = render_defects(d, du, dv, opening, px, half)
    intact = (1 - m.vacuum) * (1 - m.bar)
    fr = (
        np.array(
            [
                (m.broken * opening).sum(),
                (m.crack * (1 - m.broken) * opening).sum(),
                (m.contamination * intact * opening).sum(),
                (m.bar * opening).sum(),
            ]
        )
        / area
    )
    new_to = (1 - m.vacuum) * to[win] * beer_lambert(m.contamination_nm, cfg.mean_free_path_nm)
    new_to += m.vacuum
    new_od = od[win] * (1 - m.bar)
    to[win][mine] = new_to[mine]
    od[win][mine] = new_od[mine]
    copper = COPPER_TRANSMISSION
    trans[win][mine] = (new_od * (new_to - copper) + copper)[mine]
    win_map = defect_map[win]
    inside = mine & (opening > 0.5)
    for code, cov in (
        (DEFECT_CODES["contamination"], m.contamination * intact),
        (DEFECT_CODES["crack"], m.crack),
        (DEFECT_CODES["broken"], m.broken),
        (DEFECT_CODES["bent_bar"], m.bar),
    ):
        win_map[inside & (cov > 0.5)] = code
    return fr, float((new_od * new_to)[mine].sum())


def _px_to_stage(
    px: float, cfg: AtlasConfig, centre_um: np.ndarray, stage_centre: np.ndarray
) -> np.ndarray:
    """Affine from montage pixels to stage µm; the grid centre lands near stage (0, 0)."""
    phi = np.deg2rad(cfg.stage_rotation_deg)
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    lin = px * rot @ np.diag([1.0, -1.0 if cfg.stage_flip_y else 1.0])
    c_px = centre_um / px
    return np.column_stack([lin, stage_centre - lin @ c_px])


def ice_quality(thickness_nm: np.ndarray) -> np.ndarray:
    """The operator's liking (0-4) for a square's ice thickness (see the module docstring)."""
    return np.interp(
        thickness_nm,
        [0, 10, 25, 40, 100, 160, 250, 400],
        [0, 0.0, 3, 4, 4, 3, 1.5, 0],
    )


def _score(sq: pd.DataFrame, cfg: AtlasConfig, rng: np.random.Generator) -> pd.DataFrame:
    """The five scores from each square's physical state (rubric in the module docstring)."""
    vals = {
        "brightness": 4 * np.clip((sq["transmission"] - _T_DARK) / (_T_BRIGHT - _T_DARK), 0, 1),
        "squareness": 4 * np.clip(1 - 1.5 * (sq["broken_fraction"] + sq["bar_fraction"]), 0, 1),
        "cracking": 4 * (1 - np.exp(-sq["crack_fraction"] / 0.02)),
        "contamination": 4 * (1 - np.exp(-sq["contamination_fraction"] / 0.12)),
    }
    q = ice_quality(sq["ice_thickness_nm"].to_numpy())
    vals["overall"] = np.clip(
        np.minimum(q, vals["squareness"]) - 0.75 * vals["cracking"] - 0.75 * vals["contamination"],
        0,
        4,
    )
    out = sq.copy()
    for name in SCORES:
        v = np.asarray(vals[name], dtype=float)
        noisy = v + rng.normal(0, cfg.label_noise, len(v)) if cfg.label_noise > 0 else v
        out[name] = np.clip(np.rint(noisy), 0, 4).astype(int)
        out[f"{name}_value"] = v
    first = ["square_id", "x_px", "y_px", "stage_x_um", "stage_y_um", "full", *SCORES]
    return out[first + [c for c in out.columns if c not in first]]


def truth_squares(sim: SimulatedAtlas) -> list[KnownSquare]:
    """The squares as an EPU atlas lists them (id, centre, size, stage position)."""
    size = sim.lattice.opening_um * 1e4 / sim.pixel_size_A if sim.lattice else None
    return [
        KnownSquare(
            square_id=str(int(r.square_id)),
            x_px=float(r.x_px),
            y_px=float(r.y_px),
            size_px=size,
            stage_x_um=float(r.stage_x_um),
            stage_y_um=float(r.stage_y_um),
        )
        for r in sim.truth.itertuples()
    ]


def write_simulated_atlas(
    sim: SimulatedAtlas, out_dir: str | os.PathLike, fmt: OutputFormat = "mrc"
) -> Path:
    """Write a simulated atlas as a microscope would, plus ``truth.csv`` and ``simulation.yaml``.

    Parameters
    ----------
    sim
        From :func:`simulate_atlas`.
    out_dir
        Folder to write into (created if needed).
    fmt
        ``"mrc"``: the stitched montage as ``atlas.mrc`` (pixel size set);
        ``"epu"``: an EPU ``Atlas.dm`` with one MRC + XML per tile;
        ``"serialem"``: a SerialEM montage ``montage.mrc`` + ``montage.mrc.mdoc``.

    Returns
    -------
    pathlib.Path
        The file to hand to ``cryoscout extract`` / ``info``.
    """
    from cryoscout.io.atomic import atomic_path
    from cryoscout.io.mrc import write_mrc
    from cryoscout.runinfo import write_run_config

    if fmt not in FORMATS:
        raise InputError("--format", f"must be one of {', '.join(FORMATS)} (got {fmt})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "mrc":
        main = write_mrc(out / "atlas.mrc", sim.image, sim.pixel_size_A)
    elif fmt == "epu":
        from cryoscout.io.epu import write_epu_atlas

        main = write_epu_atlas(
            out, sim.tiles, sim.positions_px, sim.pixel_size_A, sim.px_to_stage, truth_squares(sim)
        )
    else:
        from cryoscout.io.serialem import write_serialem_montage

        main = write_serialem_montage(
            out / "montage.mrc", sim.tiles, sim.positions_px, sim.pixel_size_A, sim.px_to_stage
        )
    with atomic_path(out / "truth.csv") as tmp:
        sim.truth.to_csv(tmp, index=False, float_format="%.6g")
    write_run_config(
        out,
        {"seed": sim.seed, "format": fmt, **dataclasses.asdict(sim.config)},
        filename="simulation.yaml",
    )
    return Path(main) if main is not None else out
