"""MP-NMS thresholds chosen per class on validation tomograms.

Classes differ in how fully the network fills them (a large, well-learned
particle gives solid blobs; a small or rare one gives ragged ones, and the
background's false blobs are ragged too), so the pooled score that separates
particles from false blobs differs per class. On the domain-shift benchmark one
threshold per class, chosen on the training setting's validation tomogram,
raised a mixture-trained picker's small class from F1 0.52 to 0.71 on the
noisiest setting (BENCHMARKS.md). One tomogram holds a few dozen particles per
class, so its choice is noisy; several tomograms' counts pool into one F1 per
threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Thresholds tried (MP-NMS's pooled foreground fraction).
GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def choose_thresholds(
    validation: Sequence[tuple[np.ndarray, pd.DataFrame]],
    radius: dict[int, float],
    classes: Sequence[int],
    grid: Sequence[float] = GRID,
) -> tuple[dict[int, float], dict[int, float]]:
    """Each class's MP-NMS threshold: the one with the best F1 on validation tomograms.

    Parameters
    ----------
    validation
        One or more ``(labels, truth)``: a validation tomogram's ``(z, y, x)`` class map
        (0 = background) and its true centres (``class, x, y, z`` in voxels). Their
        tp, fp and fn are summed before F1 is taken.
    radius
        Particle radius per class in voxels: sizes MP-NMS and is the hit radius.
    classes
        Classes to choose for.
    grid
        Thresholds to try; on equal F1 the lowest wins (it keeps the most picks).

    Returns
    -------
    thresholds, f1
        ``{class: threshold}`` and ``{class: F1 at that threshold}``, for the classes
        the validation tomograms say something about: a class with no true centre in
        any of them, or with F1 0 at every threshold, is left out (it keeps the default).

    Raises
    ------
    ValueError
        No validation tomogram.
    """
    from cryoscout.picking.evaluate import evaluate_picks, stack_tomograms
    from cryoscout.picking.mpnms import mp_nms

    if not validation:
        raise ValueError("choose_thresholds needs at least one validation tomogram")
    # One pass at the lowest threshold per tomogram: a higher one keeps exactly the picks
    # scoring above it (a pick's suppressors score higher still, so they stay).
    candidates = stack_tomograms(
        [
            mp_nms(labels, radius, threshold=min(grid), classes=list(classes), progress=False)
            for labels, _ in validation
        ]
    )
    truth = stack_tomograms([t for _, t in validation])
    f1: dict[float, pd.Series] = {}  # threshold -> F1 per class, counts pooled
    for t in grid:
        picks = candidates[candidates["score"] > t] if t > min(grid) else candidates
        f1[t] = evaluate_picks(picks, truth, radius).per_class["f1"]
    present = set(truth["class"].astype(int))
    chosen, best = {}, {}
    for c in classes:
        t = max(grid, key=lambda t, c=c: (float(f1[t].get(c, 0.0)), -t))
        if c in present and f1[t].get(c, 0.0) > 0:
            chosen[c], best[c] = t, float(f1[t][c])
    return chosen, best
