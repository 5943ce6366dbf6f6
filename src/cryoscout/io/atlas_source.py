"""What an atlas input holds, before any pixel is read.

Readers (:mod:`cryoscout.io.epu`, :mod:`cryoscout.io.serialem`,
:mod:`cryoscout.io.images`) turn files into an :class:`AtlasSource`;
:mod:`cryoscout.atlas.stitch` turns an :class:`AtlasSource` into a
:class:`Montage`. Coordinates follow mrcfile's arrays: x = column, y = row,
origin at the top-left pixel of the stitched montage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

AtlasFormat = Literal["epu", "serialem", "image"]


@dataclass(frozen=True)
class TileRecord:
    """One tile named by the metadata.

    Attributes
    ----------
    index
        Position of the tile in the metadata (0-based).
    path
        Image file of the tile; ``None`` where the metadata names none.
    x_px, y_px
        Top-left corner of the tile in montage pixels.
    width, height
        Tile size in pixels.
    stage_x_um, stage_y_um
        Stage position of the tile centre in µm, when the metadata has it.
    section
        Section of a multi-image MRC stack holding the tile (SerialEM); ``None``
        for one file per tile.
    """

    index: int
    path: Path | None
    x_px: float
    y_px: float
    width: int
    height: int
    stage_x_um: float | None = None
    stage_y_um: float | None = None
    section: int | None = None


@dataclass(frozen=True)
class KnownSquare:
    """A grid square the metadata already lists (EPU does)."""

    square_id: str
    x_px: float
    y_px: float
    size_px: float | None = None
    stage_x_um: float | None = None
    stage_y_um: float | None = None


@dataclass
class AtlasSource:
    """An atlas input as its metadata describes it; no pixels are loaded."""

    format: AtlasFormat
    path: Path
    pixel_size_A: float | None
    tiles: list[TileRecord]
    montage_shape: tuple[int, int]  # (height, width) in pixels
    known_squares: list[KnownSquare] = field(default_factory=list)

    def missing_tiles(self) -> list[TileRecord]:
        """Tiles whose image file is named but absent on disk."""
        return [t for t in self.tiles if t.path is not None and not t.path.exists()]


@dataclass
class Montage:
    """A stitched atlas image and how its pixels map to the stage.

    Attributes
    ----------
    image
        ``(height, width)`` float32 image; pixels no tile covered are NaN.
    pixel_size_A
        Pixel size in Å, ``None`` when unknown.
    px_to_stage
        ``(2, 3)`` affine matrix ``A`` with ``[sx_um, sy_um] = A @ [x_px, y_px, 1]``,
        ``None`` when the input carries no stage positions.
    """

    image: np.ndarray
    pixel_size_A: float | None
    px_to_stage: np.ndarray | None = None

    def to_stage(self, x_px: np.ndarray, y_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage coordinates in µm of montage pixel positions (NaN when unknown)."""
        x = np.asarray(x_px, dtype=float)
        y = np.asarray(y_px, dtype=float)
        if self.px_to_stage is None:
            nan = np.full(np.broadcast(x, y).shape, np.nan)
            return nan, nan.copy()
        a = self.px_to_stage
        return a[0, 0] * x + a[0, 1] * y + a[0, 2], a[1, 0] * x + a[1, 1] * y + a[1, 2]
