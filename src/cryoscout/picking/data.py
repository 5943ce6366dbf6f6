"""Training patches for the picking network: normalisation, sampling, augmentation.

Patches are cubes (default 72³, smaller such as 32³ or 48³ for CPU runs). A
fraction ``background_fraction`` of them are taken at random positions, a fraction
``distractor_fraction`` on something known *not* to be a particle (gold, a vesicle's
membrane, a non-annotated protein: learned negatives, whose voxels are labelled
background); the others are centred on an annotated particle. Centres move by a random
jitter of up to a quarter of the patch side so that nothing is always in the middle.
Every patch is then augmented: mirroring of each axis, a 90° rotation in the
xy plane, a small rotation about a random axis with isotropic scaling
(``scipy.ndimage.affine_transform``; linear for the image, nearest for labels),
appearance randomisation (contrast curve, blur, missing-wedge-like smearing, coloured
noise: :class:`Appearance`) so that a picker trained on one kind of tomogram works on
another, and intensity jitter (gain, offset, Gaussian noise).

Tomograms are normalised by their median and MAD (:func:`tomogram_stats`), at training
and at inference alike, so their intensity units and offset never matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cryoscout.picking.labels import tball_labels
from cryoscout.simulate.tomo_imaging import coloured_noise

# How tomograms are normalised before the network; recorded with the weights.
# Version 2 ("robust"): median and MAD, so that a tomogram's intensity units, offset and
# a few very bright or dark features (gold, carbon) do not matter. Version 1
# ("standardize": mean and standard deviation) is what models saved before it used.
NORMALIZATION = {"method": "robust", "version": 2, "clip": 5.0}
NORMALIZATION_METHODS = ("robust", "standardize")
_MAD_TO_STD = 1.4826  # MAD of a Gaussian times this is its standard deviation


def tomogram_stats(
    volume: np.ndarray,
    method: str = "robust",
    max_samples: int = 2_000_000,
    lowpass_sigma: float = 0.0,
) -> tuple[float, float]:
    """Centre and scale of a tomogram, from a strided subsample.

    A stride keeps memory-mapped tomograms from being read whole. For any ``a > 0``
    and ``b``, the stats of ``a * volume + b`` are ``a * centre + b`` and ``a * scale``,
    so :func:`normalize` makes the network's input independent of intensity units.

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram (may be memory-mapped).
    method
        ``"robust"``: median and 1.4826 x median absolute deviation (the standard
        deviation for Gaussian data, unmoved by gold beads); ``"standardize"``: mean and
        standard deviation (models saved before normalisation version 2).
    max_samples
        Subsample size bound.
    lowpass_sigma
        The statistics of the tomogram Gaussian low-passed by this sigma (voxels; the
        picker's input low-pass, :mod:`cryoscout.picking.lowpass`); 0: as it is.

    Returns
    -------
    centre, scale : float
        ``scale`` is 1 for a constant volume.
    """
    if method not in NORMALIZATION_METHODS:
        raise ValueError(f"normalisation must be one of {NORMALIZATION_METHODS}, got {method!r}")
    step = max(1, int(np.ceil((volume.size / max_samples) ** (1 / 3))))
    if lowpass_sigma > 0:
        from cryoscout.picking.lowpass import lowpass_sample

        sample = lowpass_sample(volume, lowpass_sigma, step).astype(np.float64).ravel()
    else:
        sample = np.asarray(volume[::step, ::step, ::step], dtype=np.float64).ravel()
    if method == "standardize":
        centre, scale = float(sample.mean()), float(sample.std())
    else:
        centre = float(np.median(sample))
        scale = _MAD_TO_STD * float(np.median(np.abs(sample - centre)))
        if not scale > 0:  # more than half the voxels equal: fall back on the std
            scale = float(sample.std())
    return centre, scale if scale > 0 else 1.0


def normalization_method(normalization: dict | None) -> str:
    """The method of a recorded normalisation (models without a version standardise)."""
    if not normalization:
        return "standardize"
    return str(normalization.get("method", "standardize"))


def normalize(block: np.ndarray, mean: float, std: float, clip: float | None = 5.0) -> np.ndarray:
    """Shift and scale ``block`` by the tomogram's statistics and clip outliers (gold, ice).

    ``mean`` and ``std`` are the centre and scale from :func:`tomogram_stats`.
    Returns a new float32 array; the input is not modified.
    """
    out = (np.asarray(block, dtype=np.float32) - np.float32(mean)) / np.float32(std)
    if clip is not None:
        np.clip(out, -clip, clip, out=out)
    return out


@dataclass
class TrainingTomogram:
    """One tomogram ready for patch sampling.

    Attributes
    ----------
    volume
        ``(z, y, x)`` float32, normalised.
    labels
        ``(z, y, x)`` uint8 TBall-M labels.
    centres
        ``(n, 3)`` annotated centres as ``(z, y, x)`` voxels.
    negatives
        ``(m, 3)`` points on distractors as ``(z, y, x)`` voxels (see
        :func:`distractor_points`); empty when none are known.
    """

    volume: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


# Points per vesicle: a patch centred on a vesicle's middle would show its lumen, so
# negatives are taken on its membrane, at these many directions (a Fibonacci sphere).
_SHELL_POINTS = 12


def distractor_points(distractors: pd.DataFrame | None, shape: tuple[int, ...]) -> np.ndarray:
    """Points on distractors to centre negative training patches on.

    Parameters
    ----------
    distractors
        ``kind, x, y, z, radius`` table (a simulator's ``distractors.csv``; voxels).
        Gold beads and proteins give their centre; membranes (vesicles) give
        ``12`` points spread over their shell. A table with ``x, y, z`` only (a user's
        negatives) gives its points. ``None`` or empty: none.
    shape
        ``(z, y, x)`` volume shape; points outside it are dropped.

    Returns
    -------
    numpy.ndarray
        ``(m, 3)`` float ``(z, y, x)`` points.
    """
    if distractors is None or len(distractors) == 0:
        return np.zeros((0, 3))
    i = np.arange(_SHELL_POINTS) + 0.5
    polar = np.arccos(1 - 2 * i / _SHELL_POINTS)
    azimuth = np.pi * (1 + 5**0.5) * i
    sphere = np.stack(
        [np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], 1
    )
    points = []
    shells = {"kind", "radius"} <= set(distractors.columns)
    for row in distractors.itertuples(index=False):
        c = np.array([row.z, row.y, row.x], dtype=float)
        on_shell = shells and row.kind == "membrane"
        points.append(c + row.radius * sphere if on_shell else c[None])
    out = np.concatenate(points)
    inside = np.all((out >= 0) & (out <= np.asarray(shape) - 1), axis=1)
    return out[inside]


def prepare_tomogram(
    volume: np.ndarray,
    particles: pd.DataFrame,
    radius: float | dict[int, float],
    clip: float | None = 5.0,
    method: str = NORMALIZATION["method"],
    distractors: pd.DataFrame | None = None,
    lowpass_sigma: float = 0.0,
) -> TrainingTomogram:
    """Low-pass (optionally) and normalise a tomogram, and paint its TBall-M labels.

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram (may be memory-mapped; it is read once).
    particles
        ``class, x, y, z`` table of annotated centres (voxels).
    radius
        Label radius in voxels, one number or ``{class: r}``.
    clip
        Clip the normalised values at ``±clip``.
    method
        Normalisation (see :func:`tomogram_stats`).
    distractors
        What is in the tomogram but not annotated (``kind, x, y, z, radius``), for
        negative patches (see :func:`distractor_points`); ``None``: nothing known.
    lowpass_sigma
        Gaussian low-pass of the input in voxels before normalisation (the statistics are
        the filtered tomogram's, as at prediction); 0: none.
    """
    if lowpass_sigma > 0:
        from cryoscout.picking.lowpass import lowpass

        volume = lowpass(volume, lowpass_sigma)
    mean, std = tomogram_stats(volume, method)
    vol = normalize(volume, mean, std, clip)
    labels = tball_labels(vol.shape, particles, radius)
    centres = particles[["z", "y", "x"]].to_numpy(dtype=float).reshape(-1, 3)
    return TrainingTomogram(vol, labels, centres, distractor_points(distractors, vol.shape))


def crop(volume: np.ndarray, centre: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Cube of side ``size`` centred on integer ``centre`` (z, y, x), padded with ``fill``."""
    start = np.asarray(centre, dtype=int) - size // 2
    out = np.full((size, size, size), fill, dtype=volume.dtype)
    src = []
    dst = []
    for s, n in zip(start, volume.shape, strict=True):
        lo, hi = max(s, 0), min(s + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about unit ``axis`` by ``angle`` radians (Rodrigues)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass
class Appearance:
    """Appearance randomisation: make patches look as if from another microscope.

    Tomograms differ in resolution (defocus, CTF correction, alignment), in how the
    missing wedge smears them along z, in noise level and noise colour, and in contrast.
    With probability ``probability`` a patch gets, in this order: a sign-preserving
    contrast curve ``sign(x)|x|^gamma``; a Gaussian blur of the signal whose z width is
    up to ``1 + wedge`` times its xy width (missing-wedge-like smearing; the noise it
    removes is put back with random phases, so that blurring never denoises); additive noise whose
    power goes as ``k^slope`` (falling, white or rising with frequency ``k``). Each step
    keeps the patch's standard deviation, as the per-tomogram normalisation would for
    a whole tomogram that looked like this. None of them moves anything, so labels stay
    aligned with the image.

    Attributes
    ----------
    probability
        Chance that a patch is randomised (the rest keep their own appearance).
    gamma
        Range of the contrast exponent.
    blur_sigma
        Range of the in-plane Gaussian sigma in voxels.
    wedge
        Up to this much more blur along z (relative to xy).
    noise_level
        Range of the added noise's standard deviation relative to the patch's.
    noise_slope
        Range of the noise power-spectrum exponent (``-2``: falling, ``2``: rising).
    """

    probability: float = 0.8
    gamma: tuple[float, float] = (0.75, 1.33)
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    wedge: float = 1.0
    noise_level: tuple[float, float] = (0.0, 1.0)
    noise_slope: tuple[float, float] = (-2.0, 2.0)


def randomize_appearance(
    image: np.ndarray, aug: Appearance, rng: np.random.Generator
) -> np.ndarray:
    """Apply :class:`Appearance` randomisation to a normalised ``(z, y, x)`` patch.

    Returns a new float32 array with the patch's mean and standard deviation.
    """
    from scipy.ndimage import gaussian_filter

    x = np.asarray(image, dtype=np.float32)
    mean, std = float(x.mean()), float(x.std()) + 1e-6

    def restore(y: np.ndarray) -> np.ndarray:
        return (y - y.mean()) * (std / (float(y.std()) + 1e-6)) + mean

    gamma = float(np.exp(rng.uniform(*np.log(aug.gamma))))
    c = x - mean
    x = restore(np.sign(c) * np.abs(c / std) ** gamma)
    sigma = rng.uniform(*aug.blur_sigma)
    if sigma > 0.05:
        sz = sigma * (1 + rng.uniform(0, aug.wedge))
        smooth = gaussian_filter(x, (sz, sigma, sigma), mode="nearest")
        # A microscope blurs the signal, not the noise, which is added at recording. The
        # blur took most of the patch's noise with it (a denoiser: restoring the std
        # alone made particles 2.5x more contrasted than in any real domain), so the
        # removed detail, mostly noise, goes back in with random phases: the same
        # noise spectrum, no structure.
        spectrum = np.fft.rfftn(x - smooth)
        phases = np.exp(2j * np.pi * rng.random(spectrum.shape))
        back = np.fft.irfftn(spectrum * phases, s=x.shape, axes=tuple(range(x.ndim)))
        x = restore(smooth + back)
    level = rng.uniform(*aug.noise_level)
    if level > 0:
        noise = coloured_noise(x.shape, float(rng.uniform(*aug.noise_slope)), rng)
        x = restore(x + level * std * noise)
    return x.astype(np.float32)


@dataclass
class Augmentation:
    """Augmentation settings (all on by default).

    Attributes
    ----------
    mirror
        Flip each axis with probability 1/2.
    rot90
        Rotate by a random multiple of 90° in the xy plane.
    max_angle_deg
        Small rotation about a random axis, uniformly up to this angle.
    scale
        Isotropic scaling range ``(lo, hi)``.
    gain, offset, noise
        Intensity jitter: ``x * U(1-gain, 1+gain) + U(-offset, offset) + N(0, noise)``.
    appearance
        Appearance randomisation (contrast, blur, coloured noise), or ``None`` for none
        (the default: in the CPU-sized domain-shift benchmark it lifted 4v94 on one
        shifted domain but lost on the other and on the training domain, see
        BENCHMARKS.md; turn it on with ``Augmentation(appearance=Appearance())`` or
        ``pick train --randomize-appearance``).
    """

    mirror: bool = True
    rot90: bool = True
    max_angle_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    gain: float = 0.2
    offset: float = 0.2
    noise: float = 0.1
    appearance: Appearance | None = None


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    size: int,
    aug: Augmentation,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a cube cropped with a margin and cut it to ``size`` at its centre.

    Parameters
    ----------
    image, labels
        ``(m, m, m)`` cubes with ``m >= size`` (the margin gives the rotation room).
    size
        Output side.
    aug
        Settings.
    rng
        Random generator.

    Returns
    -------
    image : numpy.ndarray
        ``(size, size, size)`` float32.
    labels : numpy.ndarray
        ``(size, size, size)`` int64.
    """
    from scipy.ndimage import affine_transform

    m = image.shape[0]
    if aug.max_angle_deg > 0 or aug.scale != (1.0, 1.0):
        angle = np.deg2rad(rng.uniform(-aug.max_angle_deg, aug.max_angle_deg))
        scale = rng.uniform(*aug.scale)
        matrix = _rotation(rng.normal(size=3), angle) / scale
        # Output voxel o samples input voxel matrix @ (o - c_out) + c_in.
        c_out = np.full(3, (size - 1) / 2)
        c_in = np.full(3, (m - 1) / 2)
        offset = c_in - matrix @ c_out
        image = affine_transform(image, matrix, offset, (size,) * 3, order=1, mode="nearest")
        labels = affine_transform(labels, matrix, offset, (size,) * 3, order=0, mode="constant")
    else:
        lo = (m - size) // 2
        image = image[lo : lo + size, lo : lo + size, lo : lo + size]
        labels = labels[lo : lo + size, lo : lo + size, lo : lo + size]
    if aug.rot90:
        k = int(rng.integers(4))
        image, labels = np.rot90(image, k, axes=(1, 2)), np.rot90(labels, k, axes=(1, 2))
    if aug.mirror:
        for ax in range(3):
            if rng.random() < 0.5:
                image, labels = np.flip(image, ax), np.flip(labels, ax)
    if aug.appearance is not None and rng.random() < aug.appearance.probability:
        image = randomize_appearance(image, aug.appearance, rng)
    image = image * rng.uniform(1 - aug.gain, 1 + aug.gain) + rng.uniform(-aug.offset, aug.offset)
    if aug.noise > 0:
        image = image + rng.normal(0, aug.noise, image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels, np.int64)


class PatchDataset:
    """Random training patches from one or more tomograms (a map-style torch dataset).

    Item ``i`` of epoch ``e`` is drawn with a generator seeded by ``(seed, e, i)``,
    so runs repeat exactly and data-loader workers do not share random streams.

    Parameters
    ----------
    tomograms
        Prepared tomograms.
    patch_size
        Patch side in voxels.
    samples_per_epoch
        Number of patches per epoch.
    background_fraction
        Share of patches taken at random positions instead of on a particle.
    distractor_fraction
        Share of patches centred on a distractor (``TrainingTomogram.negatives``)
        instead of on a particle; ignored when no tomogram has any.
    augmentation
        Settings, or ``None`` for none (validation).
    seed
        Base seed.
    """

    def __init__(
        self,
        tomograms: list[TrainingTomogram],
        patch_size: int = 72,
        samples_per_epoch: int = 64,
        background_fraction: float = 0.25,
        augmentation: Augmentation | None = None,
        seed: int = 0,
        distractor_fraction: float = 0.0,
    ) -> None:
        if not tomograms:
            raise ValueError("no tomograms")
        if not 0 <= background_fraction + distractor_fraction <= 1:
            raise ValueError("background_fraction + distractor_fraction must be in [0, 1]")
        self.tomograms = tomograms
        self.patch_size = int(patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.background_fraction = float(background_fraction)
        self.distractor_fraction = float(distractor_fraction)
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch = 0

        def weights(counts: list[int]) -> np.ndarray | None:
            n = np.array(counts, dtype=float)
            return n / n.sum() if n.sum() > 0 else None

        self._particle_weights = weights([len(t.centres) for t in tomograms])
        self._negative_weights = weights([len(t.negatives) for t in tomograms])

    def __len__(self) -> int:
        return self.samples_per_epoch

    def draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray, str]:
        """Where the next patch is: tomogram index, ``(z, y, x)`` centre and its kind.

        ``kind`` is ``"particle"``, ``"distractor"`` or ``"background"``.
        """
        size = self.patch_size
        u = rng.random()
        kind = "particle"
        if self._negative_weights is not None and u < self.distractor_fraction:
            kind = "distractor"
        elif self._particle_weights is None or u < (
            self.background_fraction
            + (self.distractor_fraction if self._negative_weights is not None else 0.0)
        ):
            kind = "background"
        if kind == "background":
            k = int(rng.integers(len(self.tomograms)))
            return k, np.array([rng.integers(n) for n in self.tomograms[k].volume.shape]), kind
        weights = self._particle_weights if kind == "particle" else self._negative_weights
        k = int(rng.choice(len(self.tomograms), p=weights))
        points = self.tomograms[k].centres if kind == "particle" else self.tomograms[k].negatives
        centre = points[rng.integers(len(points))]
        return k, np.rint(centre + rng.uniform(-size / 4, size / 4, 3)).astype(int), kind

    def __getitem__(self, i: int):
        import torch

        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        size = self.patch_size
        k, centre, _ = self.draw(rng)
        t = self.tomograms[k]
        if self.augmentation is None:
            image = crop(t.volume, centre, size)
            labels = crop(t.labels, centre, size).astype(np.int64)
        else:
            # A margin of ~22% leaves room for a 15° rotation and 0.9x scaling of the cube.
            m = size + 2 * int(np.ceil(0.22 * size))
            image, labels = augment(
                crop(t.volume, centre, m),
                crop(t.labels, centre, m),
                size,
                self.augmentation,
                rng,
            )
        return torch.from_numpy(image)[None], torch.from_numpy(np.asarray(labels, np.int64))
