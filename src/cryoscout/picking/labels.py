"""TBall-M weak labels: one truncated ball per annotated particle centre.

DeepETPicker trains on cheap "weak" labels instead of full particle masks:
every annotated centre becomes a small solid ball holding the particle's class.
The ball used here is the TBall of the paper, a ball of radius ``sqrt(2) * r``
*truncated* to the cube of side ``2r + 1`` centred on the particle
(``r`` = label radius in voxels):

- a voxel at integer offset ``(dz, dy, dx)`` from the centre is labeled when
  ``max(|dz|, |dy|, |dx|) <= r`` **and** ``dz² + dy² + dx² <= 2 r²``;
- the label is therefore ``2r + 1`` voxels wide along each axis (and never wider),
  so choosing ``r`` at most the particle radius keeps the label inside the particle,
  while the ``sqrt(2) r`` ball keeps the xy-diagonals of the cube but removes its
  3D corners (at distance ``sqrt(3) r``);
- background is 0; where balls of two particles overlap, each voxel goes to the
  nearer centre (ties to the particle listed first).

Centres are rounded to the nearest voxel so that the label is symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd


def label_radius_for(radius: float | Mapping[int, float], cls: int) -> float:
    """The label radius of class ``cls`` from one number or a per-class mapping.

    Raises
    ------
    KeyError
        ``radius`` is a mapping without an entry for ``cls``.
    """
    if isinstance(radius, Mapping):
        return float(radius[int(cls)])
    return float(radius)


def tball_offsets(r: float) -> np.ndarray:
    """Integer offsets ``(n, 3)`` as ``(dz, dy, dx)`` covered by one TBall of label radius ``r``.

    Parameters
    ----------
    r
        Label radius in voxels (``>= 0``); fractional radii use ``floor(r)`` for the cube.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` int offsets; ``n = 1`` for ``r < 1`` (the centre voxel only).
    """
    if r < 0:
        raise ValueError(f"label radius must be >= 0, got {r}")
    half = math.floor(r)
    ax = np.arange(-half, half + 1)
    dz, dy, dx = np.meshgrid(ax, ax, ax, indexing="ij")
    inside = dz**2 + dy**2 + dx**2 <= 2.0 * r * r + 1e-9
    return np.stack([dz[inside], dy[inside], dx[inside]], axis=1)


def tball_labels(
    shape: tuple[int, int, int],
    particles: pd.DataFrame,
    radius: float | Mapping[int, float],
) -> np.ndarray:
    """Paint TBall-M labels for annotated particle centres into a ``(z, y, x)`` volume.

    Parameters
    ----------
    shape
        ``(z, y, x)`` shape of the tomogram.
    particles
        Table with ``class`` (int >= 1) and ``x, y, z`` (voxels). A table without
        ``class`` is treated as one class (1).
    radius
        Label radius ``r`` in voxels, one number for all classes or ``{class: r}``.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` uint8 volume: 0 background, otherwise the class index.

    Raises
    ------
    KeyError
        ``radius`` is a mapping without an entry for a class in ``particles``.
    ValueError
        A class index outside 1..255.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    if len(particles) == 0:
        return labels
    # Squared distance to the labeling centre, so that the nearer centre wins overlaps.
    best = np.full(shape, np.inf, dtype=np.float32)
    classes = (
        particles["class"].to_numpy(dtype=int)
        if "class" in particles
        else np.ones(len(particles), dtype=int)
    )
    if classes.min() < 1 or classes.max() > 255:
        raise ValueError("class indices must lie in 1..255 (0 is background)")
    centres = np.rint(particles[["z", "y", "x"]].to_numpy(dtype=float)).astype(int)
    offsets_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    bound = np.asarray(shape)
    for cls, centre in zip(classes, centres, strict=True):
        r = label_radius_for(radius, cls)
        if r not in offsets_cache:
            off = tball_offsets(r)
            offsets_cache[r] = (off, (off**2).sum(axis=1).astype(np.float32))
        off, d2 = offsets_cache[r]
        pts = centre + off
        keep = np.all((pts >= 0) & (pts < bound), axis=1)
        z, y, x = pts[keep].T
        dist = d2[keep]
        nearer = dist < best[z, y, x]
        z, y, x = z[nearer], y[nearer], x[nearer]
        best[z, y, x] = dist[nearer]
        labels[z, y, x] = cls
    return labels
