"""Active learning: which unlabeled squares would teach the model most if labeled.

Two ingredients, as in batch-mode active learning for regression:

*uncertainty*
    test-time-augmentation disagreement: the squares are scored as given and
    flipped/rotated (a grid square's quality does not depend on its
    orientation), and the spread of the predicted scores across those views is
    the model's uncertainty about the square. XCryoNet has no dropout layers,
    so MC dropout is not available; TTA needs no change to the network.
*diversity*
    greedy k-centre on the network's own features (global average of the
    primary branch's feature maps): each next square is the one farthest from
    every labeled or already chosen square, weighted by its uncertainty, so a
    batch does not spend labels on near-duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The extra views of test-time augmentation: (flip left-right, quarter turns).
#: Two views keep scoring at three forward passes; they change every pixel's position.
TTA_VIEWS = ((True, 1), (False, 2))


@dataclass
class Analysis:
    """Scores, uncertainty and features of the squares of one atlas.

    Attributes
    ----------
    predictions
        :class:`cryoscout.screening.predict.Predictions` of the squares as given.
    uncertainty
        ``(n,)`` mean standard deviation of the five scores across the views
        (the squares as given plus :data:`TTA_VIEWS`).
    features
        ``(n, d)`` float32 features of the network (pooled primary feature maps).
    """

    predictions: object
    uncertainty: np.ndarray
    features: np.ndarray


def _view(stack: np.ndarray, flip: bool, turns: int) -> np.ndarray:
    x = stack[:, :, ::-1] if flip else stack
    return np.ascontiguousarray(np.rot90(x, turns, axes=(1, 2)))


def analyse(model, stack: np.ndarray, batch_size: int = 64) -> Analysis:
    """Score squares and measure how unsure the model is about each.

    Parameters
    ----------
    model
        A :class:`cryoscout.screening.predict.ScoringModel`.
    stack
        ``(n, h, w)`` squares of one atlas (as given to ``model.predict``).
    batch_size
        Squares per forward pass.

    Returns
    -------
    Analysis
    """
    from cryoscout.screening.model import SCORES

    stack = np.asarray(stack, dtype=np.float32)
    predictions = model.predict(stack, batch_size=batch_size, features=True)
    views = [predictions.scores[list(SCORES)].to_numpy(dtype=np.float32)]
    for flip, turns in TTA_VIEWS:
        out = model.predict(_view(stack, flip, turns), batch_size=batch_size, attention=False)
        views.append(out.scores[list(SCORES)].to_numpy(dtype=np.float32))
    uncertainty = np.stack(views).std(axis=0).mean(axis=1)
    features = predictions.features
    return Analysis(predictions=predictions, uncertainty=uncertainty, features=features)


def suggest(
    features: np.ndarray,
    uncertainty: np.ndarray,
    labeled: np.ndarray,
    candidates: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainty-weighted greedy k-centre: the ``n`` squares to label next, best first.

    Parameters
    ----------
    features
        ``(N, d)`` features of every square of the project.
    uncertainty
        ``(N,)`` model uncertainty of each square (>= 0).
    labeled
        ``(N,)`` bool: squares already labeled (centres the choice keeps away from).
    candidates
        ``(N,)`` bool: squares that may be suggested (e.g. unlabeled full squares).
    n
        How many to choose (fewer when fewer candidates).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Indices into the ``N`` squares, in the order chosen, and each one's
        distance (in standardised feature units) to the nearest labeled or
        earlier chosen square at the time it was chosen.

    Notes
    -----
    Each step picks the candidate maximising ``u * d``, where ``u`` is its
    uncertainty (floored at a tenth of the median so that a confident but
    novel square can still be chosen) and ``d`` its distance to the nearest
    labeled or chosen square. With nothing labeled yet, ``d`` starts as the
    distance to the mean feature.
    """
    f = np.asarray(features, dtype=np.float64)
    f = (f - f.mean(axis=0)) / np.where(f.std(axis=0) > 0, f.std(axis=0), 1.0)
    u = np.asarray(uncertainty, dtype=np.float64)
    u = np.maximum(u, 0.1 * np.median(u) if len(u) else 0.0) + 1e-9
    cand = np.asarray(candidates, bool).copy()
    labeled = np.asarray(labeled, bool)
    if labeled.any():
        d = np.full(len(f), np.inf)
        for start in range(0, labeled.sum(), 512):  # (N, 512) blocks keep memory small
            centres = f[labeled][start : start + 512]
            d = np.minimum(d, _dist(f, centres).min(axis=1))
    else:
        d = np.linalg.norm(f, axis=1)
    chosen, dist = [], []
    for _ in range(min(n, int(cand.sum()))):
        gain = np.where(cand, u * (d + 1e-6), -np.inf)  # ties in d: the more uncertain
        i = int(np.argmax(gain))
        chosen.append(i)
        dist.append(float(d[i]))
        cand[i] = False
        d = np.minimum(d, _dist(f, f[i : i + 1])[:, 0])
    return np.asarray(chosen, dtype=int), np.asarray(dist)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(len(a), len(b))``."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))
