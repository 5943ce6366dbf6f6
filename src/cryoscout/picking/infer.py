"""Overlap-tiled inference: segment a whole tomogram tile by tile without seams.

Each axis is cut into *cores* of ``tile - 2 * margin`` voxels. The network sees
the core plus ``margin`` voxels of context on each side (a full ``tile``), and
only the core's prediction is kept: the margin, where zero padding at the tile
edge changes the result, is discarded. Tiles at the tomogram's edges are moved
inwards so that they never leave the volume (the volume's own edge is then the
tile's edge, exactly as in a whole-volume pass). Only one tile is in memory at
a time, so a memory-mapped tomogram larger than memory can be segmented into
memory-mapped outputs.

With ``coord_mode="tomogram"`` networks and tile starts on the network's
pooling grid, the tiled result equals the whole-volume result wherever the
margin covers the network's receptive field (tested).

A model trained on low-passed tomograms (``pick train --lowpass``) records the sigma in
its normalisation; each tile is then filtered from a read with the kernel's margin
(:func:`cryoscout.picking.lowpass.lowpass_region`) and normalised by the statistics of the
filtered tomogram, so tiled and whole-volume results agree as without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from cryoscout.picking.data import normalization_method, normalize, tomogram_stats
from cryoscout.picking.lowpass import lowpass_region, recorded_sigma
from cryoscout.progress import track


@dataclass
class TomogramPrediction:
    """Segmentation of a tomogram.

    Attributes
    ----------
    labels
        ``(z, y, x)`` uint8 argmax class (0 background).
    scores
        ``(z, y, x)`` float32 probability of the argmax class at foreground voxels and 0
        at background voxels.
    probabilities
        ``(num_classes, z, y, x)`` float32 probability of each particle class (no
        background channel), or ``None`` when not requested.
    """

    labels: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray | None = None


def axis_tiles(n: int, tile: int, margin: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: ``(start, stop, core_start, core_stop)`` in voxels.

    Parameters
    ----------
    n
        Axis length.
    tile
        Tile side including margins.
    margin
        Context discarded on each side of a core.
    align
        Tile starts are multiples of ``align`` (the network's pooling stride), so
        pooling grids of neighbouring tiles line up.

    Returns
    -------
    list of tuple
        The cores partition ``[0, n)``; each core lies in its tile at least
        ``margin`` voxels from a tile edge that is not the volume edge.
    """
    core = tile - 2 * margin
    if core < 1:
        raise ValueError(f"tile ({tile}) must be larger than twice the margin ({margin})")
    if n <= tile:
        return [(0, n, 0, n)]
    out = []
    for c0 in range(0, n, core):
        c1 = min(c0 + core, n)
        start = min(max(c0 - margin, 0), n - tile)
        start -= start % align
        stop = min(max(start + tile, c1 + margin), n)
        out.append((start, stop, c0, c1))
    return out


def iter_tiles(
    shape: tuple[int, int, int], tile: int, margin: int, align: int = 1
) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """Yield ``(tile_slices, core_slices_in_volume, core_slices_in_tile)`` over a volume."""
    per_axis = [axis_tiles(n, tile, margin, align) for n in shape]
    for tz in per_axis[0]:
        for ty in per_axis[1]:
            for tx in per_axis[2]:
                t = (tz, ty, tx)
                yield (
                    tuple(slice(a, b) for a, b, _, _ in t),
                    tuple(slice(c0, c1) for _, _, c0, c1 in t),
                    tuple(slice(c0 - a, c1 - a) for a, _, c0, c1 in t),
                )


def predict_tomogram(
    model,
    volume: np.ndarray,
    tile: int = 72,
    margin: int = 12,
    normalization: dict | None = None,
    stats: tuple[float, float] | None = None,
    device: str = "cpu",
    with_probabilities: bool = False,
    out: TomogramPrediction | None = None,
    progress: bool = True,
    max_tiles: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> TomogramPrediction:
    """Segment a whole tomogram with overlap tiling.

    Parameters
    ----------
    model
        A :class:`~cryoscout.picking.unet.ResUNet3d` (put in eval mode here).
    volume
        ``(z, y, x)`` tomogram, raw intensities; may be a memory map.
    tile, margin
        Tile side and discarded margin in voxels.
    normalization
        As recorded with the weights (``picking.data.NORMALIZATION``: median/MAD since
        version 2; ``{"method": "standardize"}``, mean/std, for older models), with the
        input low-pass when it records ``lowpass_sigma`` (voxels); ``None`` means the
        input is already filtered and normalised.
    stats
        ``(centre, scale)`` of the tomogram; computed from a subsample when ``None``.
    device
        Torch device.
    with_probabilities
        Also return per-class probabilities.
    out
        Preallocated outputs (e.g. memory-mapped MRC data) written tile by tile.
    progress
        Draw a progress bar.
    max_tiles
        Stop after this many tiles (for timing on very large volumes); ``None``: all.
    on_tile
        Called as ``on_tile(done, total)`` after each tile (the app's job progress).

    Returns
    -------
    TomogramPrediction
    """
    import torch

    from cryoscout.picking.unet import tomogram_coords

    model.eval()
    model.to(device)
    shape = tuple(int(n) for n in volume.shape)
    k = model.num_classes
    if out is None:
        out = TomogramPrediction(
            labels=np.zeros(shape, np.uint8),
            scores=np.zeros(shape, np.float32),
            probabilities=np.zeros((k, *shape), np.float32) if with_probabilities else None,
        )
    clip = None
    sigma = recorded_sigma(normalization)
    if normalization is not None:
        clip = normalization.get("clip")
        if stats is None:
            method = normalization_method(normalization)
            stats = tomogram_stats(volume, method, lowpass_sigma=sigma)
    tiles = list(iter_tiles(shape, tile, margin, align=model.stride))[:max_tiles]
    with torch.inference_mode():
        steps = track(tiles, "segmenting", unit="tile") if progress else tiles
        for i, (src, core, inner) in enumerate(steps):
            if sigma > 0:
                block = lowpass_region(volume, src, sigma)
            else:
                block = np.asarray(volume[src], dtype=np.float32)
            if normalization is not None:
                block = normalize(block, stats[0], stats[1], clip)
            x = torch.from_numpy(np.ascontiguousarray(block))[None, None].to(device)
            coords = None
            if model.coord_mode == "tomogram":
                coords = tomogram_coords([s.start for s in src], block.shape, shape, x)
            prob = torch.softmax(model(x, coords).float(), dim=1)[0][(slice(None), *inner)]
            score, label = prob.max(dim=0)
            label = label.to(torch.uint8)
            score = torch.where(label > 0, score, torch.zeros_like(score))
            out.labels[core] = label.cpu().numpy()
            out.scores[core] = score.cpu().numpy()
            if out.probabilities is not None:
                out.probabilities[(slice(None), *core)] = prob[1:].cpu().numpy()
            if on_tile is not None:
                on_tile(i + 1, len(tiles))
    return out
