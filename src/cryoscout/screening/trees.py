"""Gradient-boosted trees as plain arrays: fitted with scikit-learn, shipped as tensors.

A model file must load with ``torch.load(weights_only=True)``, which refuses
pickled objects, so a fitted
:class:`sklearn.ensemble.HistGradientBoostingRegressor` is exported to arrays:
for every tree and node the split feature, the threshold (``x <= threshold``
goes left, as in scikit-learn), the children, where a missing value goes, whether
the node is a leaf and its value (shrinkage already applied). Trees are padded
to the same node count; :meth:`TreeEnsemble.predict` walks all trees and
samples at once, one level per step, in numpy. In a file, node and feature
numbers are int16 and thresholds the float32 at or below them, which leaves
every decision on float32 features (what a tree head reads) as it was.

An ordinal score (:class:`CumulativeTrees`) is one such ensemble per level
``k = 1..4`` of the 0-4 scale, each the log-odds that the score is at least
``k``; the score is their expected value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "is_leaf", "value")
#: The arrays of node and feature numbers (stored as int16 where they fit; thresholds as float32).
INDEX_ARRAYS = ("feature", "left", "right")
#: Log-odds of a level that every training square reached (or, negated, none did).
CERTAIN = 30.0


@dataclass
class TreeEnsemble:
    """A sum of regression trees plus a constant.

    Attributes
    ----------
    feature, threshold, left, right, missing_left, is_leaf, value
        ``(t, m)`` per tree and node: split feature (int64), split threshold
        (float64), left and right child (int64), missing values go left (bool),
        leaf (bool), leaf value (float64).
    bias
        The constant the trees' values are added to.
    depth
        Longest root-to-leaf path (steps :meth:`predict` takes).
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    bias: float
    depth: int

    @classmethod
    def from_sklearn(cls, model) -> TreeEnsemble:
        """Export a fitted ``HistGradientBoostingRegressor`` (numeric features, one output).

        A binary ``HistGradientBoostingClassifier`` exports the same way; the
        ensemble then predicts its log-odds (``decision_function``).

        Reads the fitted predictors (scikit-learn's ``_predictors`` and
        ``_baseline_prediction``, stable since 0.21); the tests check that
        :meth:`predict` equals ``model.predict``.
        """
        trees = [group[0].nodes for group in model._predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise ValueError("categorical splits are not supported")
        m = max(len(t) for t in trees)
        shape = (len(trees), m)
        out = {
            "feature": np.zeros(shape, np.int64),
            "threshold": np.zeros(shape, np.float64),
            "left": np.zeros(shape, np.int64),
            "right": np.zeros(shape, np.int64),
            "missing_left": np.zeros(shape, bool),
            "is_leaf": np.ones(shape, bool),  # padding: unreachable leaves
            "value": np.zeros(shape, np.float64),
        }
        for i, t in enumerate(trees):
            k = len(t)
            out["feature"][i, :k] = t["feature_idx"]
            out["threshold"][i, :k] = t["num_threshold"]
            out["left"][i, :k] = t["left"]
            out["right"][i, :k] = t["right"]
            out["missing_left"][i, :k] = t["missing_go_to_left"].astype(bool)
            out["is_leaf"][i, :k] = t["is_leaf"].astype(bool)
            out["value"][i, :k] = np.where(t["is_leaf"], t["value"], 0.0)
        depth = max(int(t["depth"].max()) for t in trees) if trees else 0
        bias = float(np.ravel(model._baseline_prediction)[0])
        return cls(**out, bias=bias, depth=depth)

    @classmethod
    def constant(cls, value: float) -> TreeEnsemble:
        """An ensemble without trees that predicts ``value`` everywhere."""
        kinds = {"missing_left": bool, "is_leaf": bool} | dict.fromkeys(INDEX_ARRAYS, np.int64)
        arrays = {name: np.zeros((0, 1), kinds.get(name, np.float64)) for name in ARRAYS}
        return cls(**arrays, bias=float(value), depth=0)

    @classmethod
    def mean(cls, ensembles: list[TreeEnsemble]) -> TreeEnsemble:
        """One ensemble predicting the mean of ``ensembles`` (all their trees, values scaled).

        Raises
        ------
        ValueError
            With no ensemble.
        """
        if not ensembles:
            raise ValueError("no ensemble to average")
        k = len(ensembles)
        m = max(e.feature.shape[1] for e in ensembles)
        widths = [((0, 0), (0, m - e.feature.shape[1])) for e in ensembles]
        out = {}
        for name in ARRAYS:
            fill = name == "is_leaf"  # padding nodes are unreachable leaves
            parts = [
                np.pad(getattr(e, name), w, constant_values=fill)
                for e, w in zip(ensembles, widths, strict=True)
            ]
            out[name] = np.concatenate(parts)
        out["value"] = out["value"] / k
        bias = float(np.mean([e.bias for e in ensembles]))
        return cls(**out, bias=bias, depth=max(e.depth for e in ensembles))

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @functools.cached_property
    def _walk(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat arrays for :meth:`predict`: children, split features, thresholds.

        A leaf is its own child on both sides, so a sample that reached one
        stays there without a test; the children of node ``i`` sit at ``2 i``
        (left) and ``2 i + 1`` (right), so one gather finds either.
        """
        t, m = self.feature.shape
        root = (np.arange(t) * m)[:, None]
        flat = root + np.arange(m)[None, :]
        left = np.where(self.is_leaf, flat, self.left + root)
        right = np.where(self.is_leaf, flat, self.right + root)
        child = np.stack([left, right], axis=-1).ravel()
        feature = np.where(self.is_leaf, 0, self.feature).ravel()
        threshold = np.where(self.is_leaf, np.inf, self.threshold).ravel()
        return child, feature, threshold

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(n,)`` predictions for ``(n, f)`` features (NaN = missing)."""
        x = np.asarray(x, dtype=np.float64)
        n, f = x.shape
        t, m = self.feature.shape
        child, feature, threshold = self._walk
        node = np.repeat((np.arange(t) * m)[:, None], n, axis=1)  # (t, n): all samples at all roots
        row = (np.arange(n) * f)[None, :]
        values = x.ravel()
        missing = np.isnan(values).any()
        missing_right = ~self.missing_left.ravel() if missing else None
        for _ in range(self.depth):
            v = values[row + feature[node]]
            right = v > threshold[node]  # NaN compares False: goes left unless told otherwise
            if missing:
                right |= np.isnan(v) & missing_right[node]
            node = child[2 * node + right]
        return self.bias + self.value.ravel()[node].sum(axis=0)

    def to_record(self) -> dict:
        """Tensors and plain numbers for a ``weights_only`` model file."""
        import torch

        record = {n: torch.from_numpy(np.ascontiguousarray(getattr(self, n))) for n in ARRAYS}
        for name in INDEX_ARRAYS:  # node and feature numbers are small: int16 halves a head's file
            values = getattr(self, name)
            small = values.size == 0 or values.max() <= np.iinfo(np.int16).max
            record[name] = torch.from_numpy(values.astype(np.int16 if small else np.int32))
        # Thresholds as the float32 at or below each: no float32 lies between the two, so
        # float32 features (what a head reads) take the same side of every split.
        low = self.threshold.astype(np.float32)
        above = low.astype(np.float64) > self.threshold
        low[above] = np.nextafter(low[above], np.float32(-np.inf))
        record["threshold"] = torch.from_numpy(low)
        return record | {"bias": float(self.bias), "depth": int(self.depth)}

    @classmethod
    def from_record(cls, record: dict) -> TreeEnsemble:
        """Inverse of :meth:`to_record`; raises ``ValueError`` on inconsistent arrays."""
        arrays = {name: np.asarray(record[name].numpy()) for name in ARRAYS}
        for name in INDEX_ARRAYS:
            arrays[name] = arrays[name].astype(np.int64)
        arrays["threshold"] = arrays["threshold"].astype(np.float64)
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError("tree arrays must all be (trees, nodes)")
        m = next(iter(shapes))[1]
        for name in ("left", "right"):
            if arrays[name].size and (arrays[name].min() < 0 or arrays[name].max() >= m):
                raise ValueError(f"tree {name} children out of range")
        return cls(**arrays, bias=float(record["bias"]), depth=int(record["depth"]))


@dataclass
class CumulativeTrees:
    """An ordinal score as cumulative links: ``E[y] = sum_k P(y >= k)``.

    A regression tree ensemble trained with a squared loss spends its splits
    where most squares are, in the middle of the scale; an operator's top 20
    is decided at its top, between a 3 and a 4. One binary ensemble per level
    learns each boundary on its own, with a log-loss that weighs the squares
    near it.

    Attributes
    ----------
    cuts
        ``cuts[k - 1]`` predicts the log-odds that the score is at least
        ``k`` (``k = 1..len(cuts)``): a ``HistGradientBoostingClassifier``'s
        raw output, exported like a regressor.
    """

    cuts: list[TreeEnsemble]

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, levels: int = 4, seed: int = 0, **params
    ) -> CumulativeTrees:
        """Fit ``levels`` binary ensembles on ``(n, f)`` inputs and ``(n,)`` scores.

        ``params`` go to every ``HistGradientBoostingClassifier``. A level that
        no square (or every square) reaches is a constant: log-odds of -/+ ``CERTAIN``.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier

        cuts = []
        for k in range(1, levels + 1):
            above = (np.asarray(y) >= k - 0.5).astype(np.int64)  # labels may be x.5 averages
            if above.min() == above.max():
                cuts.append(TreeEnsemble.constant(CERTAIN if above[0] else -CERTAIN))
                continue
            model = HistGradientBoostingClassifier(random_state=seed, **params).fit(x, above)
            cuts.append(TreeEnsemble.from_sklearn(model))
        return cls(cuts=cuts)

    @classmethod
    def mean(cls, ensembles: list[CumulativeTrees]) -> CumulativeTrees:
        """Average the log-odds of each level over ``ensembles`` (e.g. several seeds)."""
        if not ensembles:
            raise ValueError("no ensemble to average")
        if len({len(e.cuts) for e in ensembles}) != 1:
            raise ValueError("ensembles with different numbers of levels")
        levels = zip(*(e.cuts for e in ensembles), strict=True)
        return cls(cuts=[TreeEnsemble.mean(list(c)) for c in levels])

    @property
    def n_trees(self) -> int:
        return sum(c.n_trees for c in self.cuts)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(n,)`` expected scores, in ``[0, len(cuts)]``."""
        return self.expected_level([c.predict(x) for c in self.cuts])

    @staticmethod
    def expected_level(logits: list[np.ndarray]) -> np.ndarray:
        """``sum_k P(y >= k)`` from the cuts' ``(n,)`` log-odds (e.g. predicted in parallel)."""
        from scipy.special import expit

        return np.sum([expit(z) for z in logits], axis=0)

    def to_record(self) -> dict:
        """Tensors and plain numbers for a ``weights_only`` model file."""
        return {"cuts": [c.to_record() for c in self.cuts]}

    @classmethod
    def from_record(cls, record: dict) -> CumulativeTrees:
        """Inverse of :meth:`to_record`."""
        return cls(cuts=[TreeEnsemble.from_record(c) for c in record["cuts"]])
