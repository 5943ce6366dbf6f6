"""Squares and labels for training: normalisation, resizing, labeled/unlabeled splits.

Normalisation (stored with every model, see :data:`NORMALISATIONS`):

``"atlas"`` (default)
    every square of one atlas (one extraction folder, or one stack given to
    ``predict``) is standardised with the mean and standard deviation of all
    pixels of that stack, so a square's brightness stays relative to its grid;
``"square"``
    each square is standardised on its own (brightness information is lost).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryoscout.errors import InputError
from cryoscout.screening.model import SCORES

NORMALISATIONS = ("atlas", "square")


def normalise(stack: np.ndarray, mode: str = "atlas") -> np.ndarray:
    """Standardise a stack of squares; the input is not modified.

    Parameters
    ----------
    stack
        ``(n, h, w)`` squares of one atlas.
    mode
        ``"atlas"`` (statistics of the whole stack) or ``"square"`` (per square).

    Returns
    -------
    numpy.ndarray
        ``(n, h, w)`` float32, zero mean and unit variance over the chosen extent.
    """
    x = np.asarray(stack, dtype=np.float32)
    if mode == "atlas":
        mean, std = float(x.mean()), float(x.std())
        return ((x - mean) / (std if std > 0 else 1.0)).astype(np.float32)
    if mode == "square":
        mean = x.mean(axis=(1, 2), keepdims=True)
        std = x.std(axis=(1, 2), keepdims=True)
        return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {mode!r}")


def resize_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(n, h, w)`` squares to ``(n, size, size)`` (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(stack, dtype=np.float32)
    if x.shape[1:] == (size, size):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))[:, None]  # (n, 1, h, w)
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
    return out[:, 0].numpy()


def prepare_stack(stack: np.ndarray, normalisation: str, size: int) -> np.ndarray:
    """Squares as a scoring model reads them: normalised (:func:`normalise`), then resized.

    Parameters
    ----------
    stack
        ``(n, h, w)`` squares of one atlas, or one ``(h, w)`` square.
    normalisation, size
        The model's (as its squares were prepared for fitting).

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float32.

    Raises
    ------
    ValueError
        If ``stack`` is not one square or a non-empty stack of them.
    """
    x = np.asarray(stack, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"stack must be (n, h, w) with n > 0, not {x.shape}")
    return resize_stack(normalise(x, normalisation), size)


@dataclass
class ScreeningData:
    """Squares of one or more atlases, normalised per atlas, with their labels.

    Attributes
    ----------
    images
        ``(n, s, s)`` float32 normalised squares.
    labels
        ``(n, 5)`` float32 scores in :data:`~cryoscout.screening.model.SCORES`
        order; NaN where a score is not labeled.
    atlas
        ``(n,)`` index into ``sources`` of the atlas each square comes from.
    square_id
        ``(n,)`` the square IDs of ``squares.csv``.
    sources
        The extraction folders.
    """

    images: np.ndarray
    labels: np.ndarray
    atlas: np.ndarray
    square_id: np.ndarray
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labeled(self) -> np.ndarray:
        """Boolean ``(n,)``: squares with at least one labeled score."""
        return ~np.all(np.isnan(self.labels), axis=1)


def labels_array(table, labels, path: Path | str = "labels.csv") -> np.ndarray:
    """Align a labels table (``square_id`` + any score columns) with a squares table.

    Returns
    -------
    numpy.ndarray
        ``(n, 5)`` float32; NaN for squares or scores without a label.
    """
    out = np.full((len(table), len(SCORES)), np.nan, dtype=np.float32)
    if labels is None or len(labels) == 0:
        return out
    if "square_id" not in labels.columns:
        raise InputError(path, "labels need a square_id column")
    known = [c for c in SCORES if c in labels.columns]
    if not known:
        raise InputError(path, f"labels have none of the score columns {', '.join(SCORES)}")
    by_id = labels.drop_duplicates("square_id").set_index("square_id")
    ids = table["square_id"].to_numpy()
    present = np.isin(ids, by_id.index.to_numpy())
    for c in known:
        col = SCORES.index(c)
        vals = by_id.loc[ids[present], c].to_numpy(dtype=np.float32)
        out[present, col] = vals
    return out


def load_screening_data(
    folders: Sequence[str | os.PathLike], size: int = 128, normalisation: str = "atlas"
) -> ScreeningData:
    """Read extraction folders into one :class:`ScreeningData`.

    Parameters
    ----------
    folders
        Extraction folders (``squares.csv``, ``squares.mrcs``, optional ``labels.csv``).
    size
        Side length the squares are resized to.
    normalisation
        One of :data:`NORMALISATIONS`, applied per folder.
    """
    from cryoscout.io.squares import read_extraction

    images, labels, atlas, ids = [], [], [], []
    for i, folder in enumerate(map(Path, folders)):
        if not folder.is_dir():
            raise InputError(folder, "no such extraction folder")
        extraction = read_extraction(folder)
        stack, table, lab = extraction.stack, extraction.table, extraction.labels
        if stack.ndim != 3 or len(stack) != len(table):
            raise InputError(folder, "squares.mrcs and squares.csv disagree on the square count")
        images.append(resize_stack(normalise(stack, normalisation), size))
        labels.append(labels_array(table, lab, folder / "labels.csv"))
        atlas.append(np.full(len(stack), i))
        ids.append(table["square_id"].to_numpy())
    if not images:
        raise InputError(None, "no extraction folders given")
    return ScreeningData(
        images=np.concatenate(images),
        labels=np.concatenate(labels),
        atlas=np.concatenate(atlas),
        square_id=np.concatenate(ids),
        sources=[str(f) for f in folders],
    )


@dataclass
class Split:
    """Indices into a :class:`ScreeningData`: labeled, unlabeled and held-out test squares."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    test: np.ndarray


def make_split(
    data: ScreeningData,
    n_labeled: int,
    n_unlabeled: int,
    seed: int,
    test_fraction: float = 0.2,
    test_atlases: Sequence[int] | None = None,
) -> Split:
    """Random split into labeled, unlabeled and test squares.

    Test squares are drawn from the labeled squares (``test_fraction`` of them),
    or are every labeled square of ``test_atlases`` (the by-grid split, where no
    square of a test atlas is used in training, labeled or not). Training
    labeled squares come next; unlabeled squares come from every remaining
    square (their labels are hidden). Counts larger than what is available are
    reduced to what is available.
    """
    rng = np.random.default_rng(seed)
    n = len(data)
    has_label = data.labeled
    if test_atlases is not None:
        in_test = np.isin(data.atlas, np.asarray(list(test_atlases)))
        test = np.flatnonzero(in_test & has_label)
        pool = rng.permutation(np.flatnonzero(~in_test))
    else:
        cand = rng.permutation(np.flatnonzero(has_label))
        n_test = round(test_fraction * len(cand))
        test = np.sort(cand[:n_test])
        pool = rng.permutation(np.setdiff1d(np.arange(n), test))
    pool_labeled = pool[has_label[pool]]
    labeled = np.sort(pool_labeled[:n_labeled])
    rest = np.setdiff1d(pool, labeled)
    unlabeled = np.sort(rng.permutation(rest)[:n_unlabeled]) if n_unlabeled > 0 else rest[:0]
    return Split(labeled=labeled, unlabeled=unlabeled, test=np.sort(test))


class SquareDataset:
    """A torch dataset of ``(image (1, s, s), labels (5,))``; unlabeled squares get NaN labels.

    Parameters
    ----------
    images
        ``(n, s, s)`` normalised squares.
    labels
        ``(n, 5)`` labels (NaN = missing).
    augment
        Optional ``f(square, rng) -> square`` applied on the fly (training only).
    seed
        Seed of the augmentation generator.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels, dtype=np.float32)
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import torch

        img = self.images[i]
        if self.augment is not None:
            img = np.ascontiguousarray(self.augment(img, self.rng), dtype=np.float32)
        return torch.from_numpy(img)[None], torch.from_numpy(self.labels[i])


def training_dataset(
    data: ScreeningData, split: Split, semi_supervised: bool, augment=None, seed: int = 0
) -> SquareDataset:
    """The squares a run trains on: labeled ones, plus unlabeled ones (labels hidden) for SS."""
    idx = split.labeled
    labels = data.labels[split.labeled]
    if semi_supervised and len(split.unlabeled):
        idx = np.concatenate([split.labeled, split.unlabeled])
        hidden = np.full((len(split.unlabeled), len(SCORES)), np.nan, np.float32)
        labels = np.concatenate([labels, hidden])
    return SquareDataset(data.images[idx], labels, augment=augment, seed=seed)
