"""Size decoys: the annotated species drawn larger than they are, as negatives.

A picker learns what its negatives show. When every non-annotated protein of its
training tomograms is smaller than its targets, nothing tells it that size matters,
and it calls any large object of a new sample a target (BENCHMARKS.md, "Picking under
domain shift": a mixture model shown only small negatives labelled 10 of 11 yeast
mitoribosomes, 2.5 times the proteasome's mass, as proteasomes). A decoy is a target's
own density map rendered at a larger scale, the same protein density over a larger
volume: it has the target's shape at a size the target never has, so the network can
only reject it by its size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Linear scale of the decoys (inclusive range): 2.2-4.1 times the target's mass, so a
#: decoy of the smaller class is as large as the larger class or larger.
SCALE_RANGE = (1.3, 1.6)


def enlarged_maps(
    maps: Mapping[str, tuple[np.ndarray, float]],
    rng: np.random.Generator | int | list[int],
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> dict[str, tuple[np.ndarray, float]]:
    """Each map, enlarged by a random linear scale, named for a simulator.

    The density is left as it is and its voxel size multiplied by the scale, so the
    simulator's resampling to the tomogram's voxel size renders it that much larger.

    Parameters
    ----------
    maps
        ``{name: (density (z, y, x), voxel_size_A)}`` as
        :func:`~cryoscout.simulate.tomogram.load_templates` returns (the annotated
        species).
    rng
        Generator or seed (the same seed gives the same scales).
    scale_range
        Linear scales to draw from, uniformly; both above 1.

    Returns
    -------
    dict
        ``{"<name>-x<scale>": (density, voxel_size_A * scale)}``, ready for
        ``TomogramConfig``'s ``distractor_templates``.

    Raises
    ------
    ValueError
        A scale range not above 1.
    """
    lo, hi = scale_range
    if not 1 < lo <= hi:
        raise ValueError(f"decoy scales must be above 1 (low <= high), got {scale_range}")
    rng = np.random.default_rng(rng)
    out = {}
    for name, (density, voxel_size_A) in maps.items():
        scale = float(rng.uniform(lo, hi))
        out[f"{name}-x{scale:.2f}"] = (density, voxel_size_A * scale)
    return out
