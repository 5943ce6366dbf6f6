"""Scoring squares with a trained model: saving, loading and predicting.

A model file (``model.pt`` in a run folder, ``default_xcryonet.pt`` in the
package) is a plain dictionary readable with ``torch.load(weights_only=True)``::

    {"format": "cryoscout-xcryonet", "format_version": 2,
     "meta": {"variant", "size", "width", "normalisation", "cryoscout_version", ...},
     "state_dict": {...},
     "head": None or a tree head (screening/head.py: trees as tensors),
     "calibration": {} or score -> {"x", "y"[, "zero_below"]} monotone map
                    (screening/calibration.py; files without "zero_below" have no zero point)}

Version 1 files (the network alone) still load. With a head, the scores come
from the head (which reads the network's features); with a calibration, each
score then goes through its monotone map.

:func:`load_model` also reads the gradient-boosted-trees baseline's files
(``"cryoscout-baseline-gbt"``, :mod:`cryoscout.screening.baseline`), so every
scoring model shipped or trained is loaded in one place, by path or by name
(:data:`cryoscout.models.SHIPPED`: ``default``, ``baseline``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoscout.errors import InputError, first_line
from cryoscout.models import SHIPPED, model_file
from cryoscout.screening.baseline import BASELINE_FORMAT
from cryoscout.screening.calibration import MonotoneMap
from cryoscout.screening.head import TreeHead
from cryoscout.screening.model import ATTENTION_ATTRIBUTES, SCORES, VARIANTS

if TYPE_CHECKING:
    from cryoscout.screening.baseline import BaselineScorer

MODEL_FORMAT = "cryoscout-xcryonet"
MODEL_FORMAT_VERSION = 2
#: Versions :func:`load_model` reads (1: the network alone, before heads and calibration).
READABLE_VERSIONS = (1, 2)
DEFAULT_MODEL = SHIPPED["default"]


def model_meta(net, normalisation: str, **extra: Any) -> dict[str, Any]:
    """The architecture metadata stored with the weights of ``net``."""
    from cryoscout import __version__

    return {
        "variant": net.variant,
        "size": int(net.size),
        "width": int(net.width),
        "normalisation": normalisation,
        "cryoscout_version": __version__,
        **extra,
    }


def save_model(
    path: str | os.PathLike,
    net,
    normalisation: str,
    head: TreeHead | None = None,
    calibration: dict[str, MonotoneMap] | None = None,
    **extra: Any,
) -> Path:
    """Write ``net``'s weights and architecture metadata to ``path`` atomically.

    Parameters
    ----------
    path
        Destination ``.pt`` file.
    net
        A :class:`~cryoscout.screening.model.XCryoNet`.
    normalisation
        How its inputs were normalised (see :mod:`cryoscout.screening.data`).
    head
        Optional tree head that turns the network's features into the scores.
    calibration
        Optional score name -> monotone map applied to the final scores.
    extra
        More plain (YAML/JSON-able) metadata, e.g. the training data.
    """
    import torch

    from cryoscout.io.atomic import atomic_path

    record = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "meta": model_meta(net, normalisation, **extra),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "head": head.to_record() if head is not None else None,
        "calibration": {s: m.to_record() for s, m in (calibration or {}).items()},
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


@dataclass
class Predictions:
    """What :meth:`ScoringModel.predict` returns.

    Attributes
    ----------
    scores
        One row per square: ``brightness, squareness, cracking, contamination,
        overall``, floats clipped to [0, 4].
    attention
        ``"cracking"``, ``"contamination"`` -> ``(n, h, w)`` maps in (0, 1) at
        the input squares' size; empty for the ``primary`` variant.
    features
        ``(n, c)`` the primary branch's feature maps averaged over space (what
        active learning measures distances on), when asked for.
    head_inputs
        ``(n, f)`` what a tree head reads (:func:`~cryoscout.screening.head.head_inputs`
        followed by :func:`~cryoscout.screening.head.atlas_context`), when asked for.
    """

    scores: Any  # pandas.DataFrame
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    features: np.ndarray | None = None
    head_inputs: np.ndarray | None = None


class ScoringModel:
    """A trained XCryoNet (or primary-only) network ready to score squares.

    Use :func:`load_model` to get one.

    Parameters
    ----------
    net
        The :class:`~cryoscout.screening.model.XCryoNet`.
    meta
        Its metadata (``variant``, ``size``, ``normalisation``...).
    source
        The file it was read from.
    head
        Optional tree head computing the scores from the network's features.
    calibration
        Optional score name -> monotone map applied last.
    """

    def __init__(
        self,
        net,
        meta: dict[str, Any],
        source: Path | None = None,
        head: TreeHead | None = None,
        calibration: dict[str, MonotoneMap] | None = None,
    ) -> None:
        self.net = net.eval()
        self.meta = meta
        self.source = source
        self.head = head
        self.calibration = dict(calibration or {})

    @property
    def kind(self) -> str:
        """What computes the scores, for people: e.g. ``"xcryonet + tree head, calibrated"``."""
        name = self.variant + (" + tree head" if self.head is not None else "")
        return name + (", calibrated" if self.calibration else "")

    @property
    def variant(self) -> str:
        return self.meta["variant"]

    @property
    def has_attention(self) -> bool:
        """Whether :meth:`predict` returns attention maps (``xcryonet`` only)."""
        return self.variant == "xcryonet"

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def predict(
        self,
        stack: np.ndarray,
        batch_size: int = 64,
        attention: bool = True,
        features: bool = False,
        head_inputs: bool | str = False,
    ) -> Predictions:
        """Score squares.

        Parameters
        ----------
        stack
            ``(n, h, w)`` squares of one atlas (any size; resized to the
            model's), or one ``(h, w)`` square. With ``"atlas"``
            normalisation the whole stack is standardised together, so
            brightness is judged relative to the other squares given.
        batch_size
            Squares per forward pass; results do not depend on it.
        attention
            Return the attention maps (``xcryonet`` only).
        features
            Return the pooled primary features too.
        head_inputs
            Return what a tree head reads, to fit one: ``"all"`` or ``"fast"``
            hand-made features, or ``True`` for those of this model's head
            (``"all"`` without a head).

        Returns
        -------
        Predictions
        """
        import pandas as pd
        import torch
        import torch.nn.functional as F

        from cryoscout.screening.data import prepare_stack

        x = prepare_stack(stack, self.meta["normalisation"], self.size)
        h, w = np.shape(stack)[-2:]  # attention maps go back to the squares' own size
        from cryoscout.screening.head import atlas_context
        from cryoscout.screening.head import head_inputs as compute_head_inputs

        scores, maps, feats, inputs = [], {n: [] for n in ATTENTION_ATTRIBUTES}, [], []
        want_maps = attention and self.variant == "xcryonet"
        want_inputs = head_inputs or self.head is not None
        if self.head is not None:
            hand = self.head.hand
        else:
            hand = head_inputs if isinstance(head_inputs, str) else "all"
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = torch.from_numpy(x[start : start + batch_size])[:, None]  # (b, 1, s, s)
                out = self.net(batch, reconstruct="none")
                scores.append(out.scores.clamp(0, 4).numpy())
                if want_inputs:
                    inputs.append(compute_head_inputs(out, x[start : start + batch_size], hand))
                if features:
                    feats.append(out.primary_features.mean(dim=(2, 3)).numpy())
                if want_maps:
                    for name, att in out.attention.items():
                        if (h, w) != (self.size, self.size):
                            att = F.interpolate(att, size=(h, w), mode="bilinear")
                        maps[name].append(att[:, 0].numpy())
        raw = np.concatenate(scores).astype(np.float64)  # (n, 5)
        head_in = None
        if want_inputs:
            head_in = np.concatenate([np.concatenate(inputs), atlas_context(x)], axis=1)
        if self.head is not None:
            raw = self.head.predict(head_in)
        for j, name in enumerate(SCORES):
            if name in self.calibration:
                raw[:, j] = self.calibration[name](raw[:, j])
        table = pd.DataFrame(np.clip(raw, 0, 4), columns=list(SCORES))
        att_out = {n: np.concatenate(v) for n, v in maps.items()} if want_maps else {}
        pooled = np.concatenate(feats).astype(np.float32) if features else None
        return Predictions(
            scores=table,
            attention=att_out,
            features=pooled,
            head_inputs=head_in if head_inputs else None,
        )


def load_model(run_dir: str | os.PathLike | None = None) -> ScoringModel | BaselineScorer:
    """Load a trained model.

    Parameters
    ----------
    run_dir
        A ``cryoscout train`` run folder (holding ``model.pt``), or a model
        ``.pt`` file, or the name of a shipped model (``"default"``,
        ``"baseline"``: :func:`cryoscout.models.model_file`); ``None`` loads
        the default model shipped with cryoscout.

    Returns
    -------
    ScoringModel or cryoscout.screening.baseline.BaselineScorer
        Either scores squares with ``predict(stack, attention=...) ->
        Predictions`` and says what it is in ``.kind``; only a
        ``ScoringModel`` (a network) has attention maps and ``.net``.

    Raises
    ------
    cryoscout.errors.InputError
        If the file is missing, corrupt, of another architecture or of another
        format version.
    """
    import torch

    from cryoscout.io.runfolder import check_complete
    from cryoscout.screening.model import XCryoNet

    path = model_file(run_dir)
    if path.is_dir():
        path = path / "model.pt"
    check_complete(path.parent, "training run")
    if not path.is_file():
        raise InputError(path, "no such model file (train one with `cryoscout train`)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable model file ({type(exc).__name__})") from None
    if isinstance(record, dict) and record.get("format") == BASELINE_FORMAT:
        return _load_baseline(record, path)
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise InputError(
            path,
            f"not a cryoscout screening model (expected {MODEL_FORMAT} or {BASELINE_FORMAT})",
        )
    version = record.get("format_version")
    if version not in READABLE_VERSIONS:
        raise InputError(
            path,
            f"model format version {version} is not supported by this cryoscout "
            f"(reads {', '.join(map(str, READABLE_VERSIONS))}); retrain it or use a "
            "matching cryoscout",
        )
    meta = record.get("meta", {})
    try:
        if meta["variant"] not in VARIANTS:
            raise InputError(path, f"unknown model variant {meta['variant']!r}")
        net = XCryoNet(meta["variant"], int(meta["size"]), int(meta["width"]))
        net.load_state_dict(record["state_dict"], strict=True)
    except InputError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InputError(
            path, f"weights do not match the XCryoNet architecture ({first_line(exc)})"
        ) from None
    try:
        head = TreeHead.from_record(record["head"]) if record.get("head") else None
        calibration = {
            s: MonotoneMap.from_record(m) for s, m in (record.get("calibration") or {}).items()
        }
    except (KeyError, AttributeError, ValueError, TypeError) as exc:
        raise InputError(path, f"broken tree head or calibration ({first_line(exc)})") from None
    return ScoringModel(net, meta, source=path, head=head, calibration=calibration)


def _load_baseline(record: dict, path: Path) -> BaselineScorer:
    """The baseline scorer of a ``cryoscout-baseline-gbt`` file's dictionary."""
    from cryoscout.screening.baseline import BASELINE_FORMAT_VERSION, BaselineScorer

    version = record.get("format_version")
    if version != BASELINE_FORMAT_VERSION:
        raise InputError(
            path,
            f"baseline model format version {version} is not supported by this cryoscout "
            f"(reads {BASELINE_FORMAT_VERSION}); refit it with benchmarks/fit_baseline_model.py "
            "or use a matching cryoscout",
        )
    try:
        return BaselineScorer.from_record(record, source=path)
    except (KeyError, AttributeError, ValueError, TypeError) as exc:
        raise InputError(path, f"broken baseline model ({first_line(exc)})") from None
