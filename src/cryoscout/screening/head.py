"""A tree head on XCryoNet: the network's features and hand-made features -> boosted trees.

At CPU scale gradient-boosted trees on hand-made features (:mod:`.baseline`)
beat the network alone on every score. The tree head keeps the whole network
(its branches, attention maps and scores) and replaces only the last step: one
tree ensemble per score reads, for each square,

* the mean and maximum over space of the primary branch's feature maps and of
  each attribute branch's (attention-weighted) feature maps;
* the network's own scores: fusion, primary and attribute branches;
* the baseline's hand-made features: all of them (:func:`.baseline.square_features`,
  about 17 ms a square on one core), or only the cheap intensity ones
  (:func:`.baseline.fast_features`, ``hand="fast"``, which keeps scoring as
  fast as the network alone), or the cheap ones and the crack features of
  :mod:`.lines` (``hand="lines"``: long thin bright lines, which the network
  sees less surely than the baseline's ridge filter does, about 1 ms a square);
* where the square stands in its atlas (:func:`atlas_context`): the rubric's
  ice quality depends on the absolute ice thickness, which the atlas
  normalisation hides but the atlas itself shows, between the opaque bars and
  the brightest squares.

The trees are fitted with scikit-learn (the baseline's regressor, so both are
trained alike) on squares of atlases the network did not train on, so that
they learn how far to trust the network on new grids, and are stored as
arrays (:mod:`.trees`). A score may instead be *ordinal*
(:class:`~.trees.CumulativeTrees`): one classifier per level of the 0-4 scale,
the score their expected value, which orders the best squares better than a
regression does (``fit(ordinal=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoscout.screening.baseline import TREE_PARAMS
from cryoscout.screening.model import ATTENTION_ATTRIBUTES, SCORES
from cryoscout.screening.trees import CumulativeTrees, TreeEnsemble

#: Which hand-made features a head reads.
HAND_FEATURES = ("all", "fast", "lines")
#: Settings of each level's classifier in an ordinal score: the regressors' (baseline
#: ``TREE_PARAMS``) with twice the iterations, as the log-loss still improved at 200
#: (early stopping still ends it sooner where it does not).
ORDINAL_PARAMS = TREE_PARAMS | {"max_iter": 400}
#: Columns of :func:`atlas_context`; heads fitted before the vacuum column read the first 7.
N_CONTEXT = 8


def head_inputs(out, images: np.ndarray, hand: str = "all") -> np.ndarray:
    """What the tree head reads for a batch of squares, less the atlas context.

    Parameters
    ----------
    out
        The network's :class:`~cryoscout.screening.model.XCryoNetOutput` for the batch.
    images
        ``(b, s, s)`` the normalised squares the network saw.
    hand
        ``"all"`` hand-made features, only the ``"fast"`` ones (a prefix of
        all), or the fast ones followed by :func:`.lines.line_features` (``"lines"``).

    Returns
    -------
    numpy.ndarray
        ``(b, f)`` float32: network features, network scores, hand-made features.
    """
    import torch

    from cryoscout.screening.baseline import fast_features, stack_features

    maps = [out.primary_features, *(out.attribute_features[n] for n in out.attribute_features)]
    parts = [p for f in maps for p in (f.mean(dim=(2, 3)), f.amax(dim=(2, 3)))]
    parts += [out.scores, out.primary_scores]
    names = [n for n in ATTENTION_ATTRIBUTES if n in out.attribute_scores]
    parts += [out.attribute_scores[n][:, None] for n in names]
    net = torch.cat(parts, dim=1).float().numpy()  # (b, 2 * branches * 2w + 10 [+ 2])
    if hand not in HAND_FEATURES:
        raise ValueError(f"hand must be one of {HAND_FEATURES}, not {hand!r}")
    if hand == "all":
        handmade = stack_features(images)
    elif hand == "fast":
        handmade = fast_features(images)
    else:
        from cryoscout.screening.lines import line_features

        handmade = np.concatenate([fast_features(images), line_features(images)], axis=1)
    return np.concatenate([net, handmade], axis=1).astype(np.float32)


def atlas_context(images: np.ndarray) -> np.ndarray:
    """Where each square of one atlas stands among the others.

    Parameters
    ----------
    images
        ``(n, s, s)`` the normalised squares of one atlas (the whole stack given
        to ``predict``).

    Returns
    -------
    numpy.ndarray
        ``(n, 8)`` float32: the central half's mean ``m`` relative to the
        atlas's bars (1st percentile of all pixels) and brightest squares (95th
        percentile of ``m``), ``(m - bars) / span`` and ``(m - median) / span``
        with ``span`` their difference; the rank of ``m`` (0 darkest, 1
        brightest); the central half's standard deviation over ``span``; the
        bars, brightest and median levels themselves; and ``m``'s transmission
        against vacuum, ``(m - bars) / (vacuum - bars)``, with ``vacuum`` the
        brightest 0.1 % of 4x4-pixel blocks of the atlas (film torn off a
        broken square lets the whole beam through).
    """
    x = np.asarray(images, dtype=np.float32)
    n, s = x.shape[0], x.shape[1]
    centre = x[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].reshape(n, -1)
    m = centre.mean(axis=1)
    bars = float(np.percentile(x, 1))  # copper: the darkest pixels of the atlas
    top = float(np.percentile(m, 95))  # thinnest ice, or no film at all
    median = float(np.median(m))
    span = max(top - bars, 1e-6)
    rank = np.argsort(np.argsort(m, kind="stable"), kind="stable") / max(n - 1, 1)
    b = s // 4 * 4  # blocks average the shot noise out of single bright pixels
    blocks = x[:, :b, :b].reshape(n, b // 4, 4, b // 4, 4).mean(axis=(2, 4))
    vacuum = float(np.percentile(blocks, 99.9)) if b else float(x.max())
    cols = [(m - bars) / span, (m - median) / span, rank, centre.std(axis=1) / span]
    cols += [np.full(n, bars), np.full(n, top), np.full(n, median)]
    cols += [(m - bars) / max(vacuum - bars, 1e-6)]
    return np.stack(cols, axis=1).astype(np.float32)


def fast_inputs(inputs: np.ndarray) -> np.ndarray:
    """Cut what a ``hand="fast"`` head reads from inputs with every hand-made feature.

    Parameters
    ----------
    inputs
        ``(n, f)`` inputs of ``ScoringModel.predict(..., head_inputs=True)`` of
        a model without a head (network, all hand-made features, atlas context).

    Returns
    -------
    numpy.ndarray
        ``(n, f')``: network, the first ``N_FAST`` hand-made features, atlas context.
    """
    from cryoscout.screening.baseline import N_FAST, square_features

    blank = np.zeros((2, 16, 16), np.float32)
    n_all, n_context = len(square_features(blank[0])), atlas_context(blank).shape[1]
    cut = inputs.shape[1] - n_context - n_all + N_FAST
    return np.concatenate([inputs[:, :cut], inputs[:, -n_context:]], axis=1)


@dataclass
class TreeHead:
    """One tree ensemble per score: a regression or, for ordinal scores, cumulative links."""

    trees: dict[str, TreeEnsemble | CumulativeTrees]
    n_inputs: int
    hand: str = "all"
    n_context: int = N_CONTEXT

    @property
    def ordinal(self) -> tuple[str, ...]:
        """The scores predicted as ordinal (:class:`~cryoscout.screening.trees.CumulativeTrees`)."""
        return tuple(s for s in SCORES if isinstance(self.trees[s], CumulativeTrees))

    @classmethod
    def fit(
        cls,
        inputs: np.ndarray,
        labels: np.ndarray,
        seed: int = 0,
        hand: str = "all",
        n_seeds: int = 1,
        ordinal: tuple[str, ...] = (),
    ) -> TreeHead:
        """Fit on ``(n, f)`` inputs and ``(n, 5)`` labels.

        The inputs of a square are its :func:`head_inputs` (of ``hand``)
        followed by its :func:`atlas_context`, as ``ScoringModel.predict``
        returns them.

        Labels may be NaN (missing, ignored). With ``n_seeds`` > 1, one
        ensemble per seed ``seed, seed + 1, ...`` (each holds out another
        random tenth for early stopping) and the head predicts their mean,
        which varies less from one fit to the next. The scores of ``ordinal``
        are fitted as :class:`~cryoscout.screening.trees.CumulativeTrees`
        (one classifier per level, :data:`ORDINAL_PARAMS`).

        Raises
        ------
        ValueError
            If some score has fewer than two labels, ``n_seeds`` < 1 or
            ``ordinal`` names something other than a score.
        """
        from cryoscout.screening.baseline import BaselineModel

        if n_seeds < 1:
            raise ValueError(f"n_seeds must be at least 1, not {n_seeds}")
        unknown = sorted(set(ordinal) - set(SCORES))
        if unknown:
            raise ValueError(f"ordinal scores must be among {SCORES}, not {unknown}")
        missing = [s for j, s in enumerate(SCORES) if (~np.isnan(labels[:, j])).sum() < 2]
        if missing:
            raise ValueError(f"too few labels to fit the tree head for {', '.join(missing)}")
        regressed = np.where(np.isin(SCORES, ordinal)[None, :], np.nan, labels)
        fits = [BaselineModel(seed=seed + k).fit(inputs, regressed) for k in range(n_seeds)]
        trees: dict[str, TreeEnsemble | CumulativeTrees] = {}
        for j, s in enumerate(SCORES):
            valid = ~np.isnan(labels[:, j])
            if s in ordinal:
                parts = [
                    CumulativeTrees.fit(
                        inputs[valid], labels[valid, j], seed=seed + k, **ORDINAL_PARAMS
                    )
                    for k in range(n_seeds)
                ]
                trees[s] = CumulativeTrees.mean(parts)
            else:
                trees[s] = TreeEnsemble.mean([TreeEnsemble.from_sklearn(f.models[s]) for f in fits])
        return cls(trees=trees, n_inputs=int(inputs.shape[1]), hand=hand)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """``(n, 5)`` scores (not clipped) from ``(n, f)`` inputs (see :meth:`fit`)."""
        if inputs.ndim == 2 and self.n_context < N_CONTEXT:
            inputs = inputs[:, : inputs.shape[1] - (N_CONTEXT - self.n_context)]  # newer columns
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs:
            raise ValueError(f"the tree head reads {self.n_inputs} inputs, not {inputs.shape}")
        return np.stack(_predict_in_parallel(self.trees, inputs), axis=1)

    def to_record(self) -> dict:
        """Tensors and plain numbers for a ``weights_only`` model file."""
        trees = {s: t.to_record() for s, t in self.trees.items()}
        return {"kind": "trees", "n_inputs": self.n_inputs, "hand": self.hand,
                "n_context": self.n_context, "trees": trees}  # fmt: skip

    @classmethod
    def from_record(cls, record: dict) -> TreeHead:
        """Inverse of :meth:`to_record`; raises ``ValueError``/``KeyError`` on a bad record."""
        if record.get("kind") != "trees":
            raise ValueError(f"unknown head kind {record.get('kind')!r}")
        hand = str(record.get("hand", "all"))
        if hand not in HAND_FEATURES:
            raise ValueError(f"unknown hand-made feature set {hand!r}")
        trees = {
            s: CumulativeTrees.from_record(t) if "cuts" in t else TreeEnsemble.from_record(t)
            for s in SCORES
            for t in [record["trees"][s]]
        }
        n_context = int(record.get("n_context", 7))  # files before the vacuum column
        if not 7 <= n_context <= N_CONTEXT:
            raise ValueError(f"unknown atlas context of {n_context} columns")
        return cls(trees=trees, n_inputs=int(record["n_inputs"]), hand=hand, n_context=n_context)


def _predict_in_parallel(
    trees: dict[str, TreeEnsemble | CumulativeTrees], inputs: np.ndarray
) -> list[np.ndarray]:
    """Every score's prediction, the ensembles walked on torch's CPU threads at once.

    numpy's gathers release the GIL, so walking ensembles on two threads
    takes about half the time; an ordinal score's levels are walked apart.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    parts = {s: t.cuts if isinstance(t, CumulativeTrees) else [t] for s, t in trees.items()}
    jobs = [e for s in SCORES for e in parts[s]]
    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(jobs)))) as pool:
        raw = iter(list(pool.map(lambda e: e.predict(inputs), jobs)))
    out = []
    for s in SCORES:
        values = [next(raw) for _ in parts[s]]
        ordinal = isinstance(trees[s], CumulativeTrees)
        out.append(CumulativeTrees.expected_level(values) if ordinal else values[0])
    return out
