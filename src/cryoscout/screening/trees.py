"""Gradient-boosted trees as plain arrays: fitted with scikit-learn, shipped as tensors.

A model file must load with ``torch.load(weights_only=True)``, which refuses
pickled objects, so a fitted
:class:`sklearn.ensemble.HistGradientBoostingRegressor` is exported to arrays:
for every tree and node the split feature, the threshold (``x <= threshold``
goes left, as in scikit-learn), the children, where a missing value goes, whether
the node is a leaf and its value (shrinkage already applied). Trees are padded
to the same node count; :meth:`TreeEnsemble.predict` walks all trees and
samples at once, one level per step, in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "is_leaf", "value")


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

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(n,)`` predictions for ``(n, f)`` features (NaN = missing)."""
        x = np.asarray(x, dtype=np.float64)
        n, f = x.shape
        t, m = self.feature.shape
        # Flat indices into the raveled arrays: one gather per step, not 2-D fancy indexing
        # (3-4 times faster for a few hundred trees).
        feature, threshold = self.feature.ravel(), self.threshold.ravel()
        left, right = self.left.ravel(), self.right.ravel()
        missing_left, is_leaf = self.missing_left.ravel(), self.is_leaf.ravel()
        root = (np.arange(t) * m)[:, None]  # (t, 1)
        row = (np.arange(n) * f)[None, :]  # (1, n)
        node = np.repeat(root, n, axis=1)  # (t, n): every sample at every root
        values = x.ravel()
        for _ in range(self.depth):
            v = values[row + feature[node]]
            go_left = np.where(np.isnan(v), missing_left[node], v <= threshold[node])
            child = np.where(go_left, left[node], right[node]) + root
            node = np.where(is_leaf[node], node, child)
        return self.bias + self.value.ravel()[node].sum(axis=0)

    def to_record(self) -> dict:
        """Tensors and plain numbers for a ``weights_only`` model file."""
        import torch

        record = {n: torch.from_numpy(np.ascontiguousarray(getattr(self, n))) for n in ARRAYS}
        return record | {"bias": float(self.bias), "depth": int(self.depth)}

    @classmethod
    def from_record(cls, record: dict) -> TreeEnsemble:
        """Inverse of :meth:`to_record`; raises ``ValueError`` on inconsistent arrays."""
        arrays = {name: np.asarray(record[name].numpy()) for name in ARRAYS}
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError("tree arrays must all be (trees, nodes)")
        m = next(iter(shapes))[1]
        for name in ("left", "right"):
            if arrays[name].size and (arrays[name].min() < 0 or arrays[name].max() >= m):
                raise ValueError(f"tree {name} children out of range")
        return cls(**arrays, bias=float(record["bias"]), depth=int(record["depth"]))
