"""A strong simple baseline: gradient-boosted trees on hand-made square features.

One :class:`sklearn.ensemble.HistGradientBoostingRegressor` per score, on
features an operator would name: the intensity histogram and its moments,
edge density, the area of dark blobs (contamination, bent bars), the area of
bright thin lines (cracks: ridges), and how square the bright opening is.
It shows what the deep model adds beyond engineered features.

It is also a shipped scoring model of its own (``cryoscout screen -m baseline``):
:func:`save_baseline` writes the fitted regressors as tree arrays
(:mod:`.trees`) in a plain dictionary readable with
``torch.load(weights_only=True)``::

    {"format": "cryoscout-baseline-gbt", "format_version": 1,
     "meta": {"kind", "size", "normalisation", "features", "n_features",
              "cryoscout_version", ...},
     "trees": score -> a TreeEnsemble record}

and :class:`BaselineScorer` (what :func:`cryoscout.screening.predict.load_model`
returns for such a file) scores squares with the same ``predict`` contract as
the network: the squares normalised and resized as the features were computed
for fitting, then :func:`stack_features`, then one tree ensemble per score. It
has no attention maps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoscout.screening.model import SCORES
from cryoscout.screening.trees import TreeEnsemble

BASELINE_FORMAT = "cryoscout-baseline-gbt"
BASELINE_FORMAT_VERSION = 1
#: What computes the scores, for people (``ScoringModel.kind`` of the network).
BASELINE_KIND = "gradient-boosted trees on hand-made features"
#: The feature set a baseline file reads: :func:`square_features` of this cryoscout.
FEATURE_SET = "square_features"

if TYPE_CHECKING:
    from cryoscout.screening.predict import Predictions

N_BINS = 16
#: Settings of every gradient-boosted tree ensemble (baseline and tree head alike).
TREE_PARAMS = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15}
#: How many of :func:`square_features` come first and cheap (:func:`fast_features`).
N_FAST = N_BINS + 2 + 5 + 2


def fast_features(stack: np.ndarray) -> np.ndarray:
    """The cheap intensity features of ``(n, s, s)`` normalised squares, all at once.

    The intensity histogram (16 bins on [-4, 4]), mean, standard deviation,
    5/25/50/75/95th percentiles and the central half's mean and standard
    deviation: the first :data:`N_FAST` entries of :func:`square_features`,
    vectorised over the stack (no filtering, so about 1000x faster).

    Returns
    -------
    numpy.ndarray
        ``(n, N_FAST)`` float32.
    """
    x = np.asarray(stack, dtype=np.float32)
    n, s = x.shape[0], x.shape[1]
    flat = x.reshape(n, -1)
    # Bin i holds [-4 + i/2, -4 + (i+1)/2), the last one also 4 (numpy's histogram rule).
    idx = np.minimum(((np.clip(flat, -4, 4) + 4) * (N_BINS / 8)).astype(np.int64), N_BINS - 1)
    hist = np.stack([np.bincount(row, minlength=N_BINS) for row in idx]) / flat.shape[1]
    pct = np.percentile(flat, [5, 25, 50, 75, 95], axis=1).T  # (n, 5)
    centre = x[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].reshape(n, -1)
    cols = [hist, flat.mean(1)[:, None], flat.std(1)[:, None], pct]
    cols += [centre.mean(1)[:, None], centre.std(1)[:, None]]
    return np.concatenate(cols, axis=1).astype(np.float32)


def square_features(square: np.ndarray) -> np.ndarray:
    """Hand-made features of one normalised square.

    Parameters
    ----------
    square
        ``(s, s)`` square, normalised as for the network (atlas standardisation).

    Returns
    -------
    numpy.ndarray
        1-D float32 feature vector (same length for every square size).
    """
    from scipy import ndimage
    from skimage import feature, filters, measure

    x = np.asarray(square, dtype=np.float32)
    s = x.shape[0]
    smooth = filters.gaussian(x, sigma=1.0)
    edges = feature.canny(smooth, sigma=1.0)
    # Opening: the bright region around the centre, as the squareness label sees it.
    thresh = filters.threshold_otsu(smooth) if np.ptp(smooth) > 0 else float(smooth.mean())
    bright = smooth > thresh
    labels = measure.label(bright)
    opening = labels == labels[s // 2, s // 2] if labels[s // 2, s // 2] else bright
    area = float(opening.sum()) / x.size
    rows, cols = np.nonzero(opening)
    bbox = (np.ptp(rows) + 1) * (np.ptp(cols) + 1) / x.size if len(rows) else 0.0
    fill = area / bbox if bbox else 0.0
    # Dark blobs inside the opening: contamination.
    inner = ndimage.binary_erosion(opening, iterations=max(1, s // 32))
    med = float(np.median(x[inner])) if inner.any() else float(np.median(x))
    mad = float(np.median(np.abs(x[inner] - med))) if inner.any() else 1.0
    dark = inner & (smooth < med - 3 * max(mad, 1e-3))
    blobs, _ = ndimage.label(dark)
    sizes = np.bincount(blobs.ravel())
    keep = sizes >= max(2, s // 16)  # ignore single noisy pixels
    keep[0] = False
    dark = keep[blobs]
    # Bright thin lines (ridges) inside the opening: cracks.
    ridge = filters.sato(x, sigmas=(1, 2), black_ridges=False)
    ridge_mask = inner & (ridge > np.percentile(ridge, 99))
    ridge_floor = float(np.median(ridge[inner])) if inner.any() else float(np.median(ridge))
    lines = inner & (ridge > 3 * ridge_floor + 1e-3)
    feats = [
        *fast_features(x[None])[0],
        edges.mean(),
        edges[inner].mean() if inner.any() else 0.0,
        area,
        fill,
        dark.sum() / max(1, inner.sum()),
        lines.sum() / max(1, inner.sum()),
        ridge_mask.sum() / x.size,
        float(ridge[inner].mean()) if inner.any() else 0.0,
        float(ridge[inner].max()) if inner.any() else 0.0,
    ]
    return np.asarray(feats, dtype=np.float32)


def stack_features(stack: np.ndarray) -> np.ndarray:
    """``(n, n_features)`` features of ``(n, s, s)`` normalised squares."""
    return np.stack([square_features(sq) for sq in stack])


@dataclass
class BaselineModel:
    """One gradient-boosted regressor per score (scores without labels are skipped)."""

    seed: int = 0
    models: dict = field(default_factory=dict)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> BaselineModel:
        """Fit on ``(n, f)`` features and ``(n, 5)`` labels (NaN = missing, ignored).

        Returns
        -------
        BaselineModel
            ``self``.
        """
        from sklearn.ensemble import HistGradientBoostingRegressor

        for j, name in enumerate(SCORES):
            valid = ~np.isnan(labels[:, j])
            if valid.sum() < 2:
                continue
            model = HistGradientBoostingRegressor(random_state=self.seed, **TREE_PARAMS)
            self.models[name] = model.fit(features[valid], labels[valid, j])
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(n, 5)`` scores clipped to [0, 4]; NaN for scores never labeled."""
        out = np.full((len(features), len(SCORES)), np.nan)
        for j, name in enumerate(SCORES):
            if name in self.models:
                out[:, j] = np.clip(self.models[name].predict(features), 0, 4)
        return out


def n_square_features() -> int:
    """Length of :func:`square_features` (the same for every square size)."""
    return len(square_features(np.zeros((16, 16), np.float32)))


def save_baseline(
    path: str | os.PathLike,
    model: BaselineModel,
    size: int,
    normalisation: str = "atlas",
    **extra: Any,
) -> Path:
    """Write a fitted :class:`BaselineModel` as a scoring model file, atomically.

    Parameters
    ----------
    path
        Destination ``.pt`` file.
    model
        Fitted on :func:`stack_features` of squares normalised with
        ``normalisation`` and resized to ``size`` (as
        :func:`cryoscout.screening.data.load_screening_data` gives them), with
        a regressor for every score.
    size, normalisation
        How the squares were prepared before their features were computed.
    extra
        More plain (YAML/JSON-able) metadata: the training data, the seed...

    Raises
    ------
    ValueError
        If a score has no regressor.
    """
    import torch

    from cryoscout import __version__
    from cryoscout.io.atomic import atomic_path

    missing = [s for s in SCORES if s not in model.models]
    if missing:
        raise ValueError(f"the baseline has no regressor for {', '.join(missing)}")
    meta = {
        "kind": BASELINE_KIND,
        "size": int(size),
        "normalisation": normalisation,
        "features": FEATURE_SET,
        "n_features": n_square_features(),
        "cryoscout_version": __version__,
        "seed": int(model.seed),
        **extra,
    }
    trees = {s: TreeEnsemble.from_sklearn(model.models[s]).to_record() for s in SCORES}
    record = {
        "format": BASELINE_FORMAT,
        "format_version": BASELINE_FORMAT_VERSION,
        "meta": meta,
        "trees": trees,
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


class BaselineScorer:
    """The gradient-boosted-trees baseline ready to score squares.

    Use :func:`cryoscout.screening.predict.load_model` to get one; it has the
    network's ``predict`` contract (no attention maps).

    Parameters
    ----------
    trees
        Score name -> tree ensemble reading :func:`square_features`.
    meta
        Its metadata (``size``, ``normalisation``, ``n_features``...).
    source
        The file it was read from.
    """

    variant = "baseline-gbt"
    kind = BASELINE_KIND
    #: No attention maps: ``cryoscout explain`` refuses it, the report shows no overlays.
    has_attention = False

    def __init__(
        self, trees: dict[str, TreeEnsemble], meta: dict[str, Any], source: Path | None = None
    ) -> None:
        self.trees = trees
        self.meta = meta
        self.source = source

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @classmethod
    def from_record(cls, record: dict, source: Path | None = None) -> BaselineScorer:
        """The scorer of a :func:`save_baseline` file's dictionary.

        Raises
        ------
        ValueError, KeyError, TypeError, AttributeError
            If the record is not a whole baseline of this cryoscout's feature set.
        """
        from cryoscout.screening.data import NORMALISATIONS

        meta = dict(record["meta"])
        if meta.get("features") != FEATURE_SET or int(meta["n_features"]) != n_square_features():
            raise ValueError(
                f"fitted on {meta.get('n_features')} features of {meta.get('features')!r}; "
                f"this cryoscout computes {n_square_features()} of {FEATURE_SET!r}"
            )
        if meta["normalisation"] not in NORMALISATIONS or int(meta["size"]) < 16:
            raise ValueError(f"bad size {meta['size']} or normalisation {meta['normalisation']}")
        trees = {s: TreeEnsemble.from_record(record["trees"][s]) for s in SCORES}
        n = int(meta["n_features"])
        for s, t in trees.items():
            if t.feature.size and (t.feature.min() < 0 or t.feature.max() >= n):
                raise ValueError(f"{s} trees read features beyond the {n} computed")
        return cls(trees, meta, source)

    def predict(
        self,
        stack: np.ndarray,
        batch_size: int = 64,
        attention: bool = True,
        features: bool = False,
    ) -> Predictions:
        """Score squares.

        Parameters
        ----------
        stack
            ``(n, h, w)`` squares of one atlas (any size; resized to the
            model's), or one ``(h, w)`` square; normalised together as for
            fitting (``"atlas"``: the whole stack).
        batch_size
            Unused (the features are computed a square at a time); kept so that
            every scoring model is called alike.
        attention
            Unused: the baseline has no attention maps (``Predictions.attention``
            is always empty).
        features
            Also return the hand-made features (what active learning measures
            distances on, after standardising them).

        Returns
        -------
        cryoscout.screening.predict.Predictions
        """
        import pandas as pd

        from cryoscout.screening.data import prepare_stack
        from cryoscout.screening.predict import Predictions

        x = prepare_stack(stack, self.meta["normalisation"], self.size)
        feats = stack_features(x)  # (n, f)
        raw = np.stack([self.trees[s].predict(feats) for s in SCORES], axis=1)
        table = pd.DataFrame(np.clip(raw, 0, 4), columns=list(SCORES))
        pooled = feats.astype(np.float32) if features else None
        return Predictions(scores=table, attention={}, features=pooled)
