"""Cracks as features: how strongly a square holds long, thin, bright lines.

A crack in the film lets the beam through a slit one or two pixels wide at
atlas magnification: a thin line brighter than the ice around it, straight
over tens of pixels. The holey film's holes are bright too, but round. Three
steps tell them apart, on a whole stack of squares at once in torch (about
1 ms a square on one core, so a head that reads them still scores hundreds of
squares a second):

1. *Ridges.* The Hessian of the square smoothed at ``RIDGE_SIGMA`` pixels
   has, on a bright line, one strongly negative eigenvalue (across it) and one
   near zero (along it); on a bright blob both are negative. The ridge
   strength ``max(0, -l1 - |l2|)`` keeps lines and drops blobs.
2. *Length.* The ridge map (max-pooled by 2) is averaged along straight
   segments of ``SEGMENT`` pixels in ``N_ANGLES`` directions and the best
   direction kept: a crack adds up along its length, noise and holes do not.
3. *Inside the film.* Only the opening, eroded by a 32nd of the square, is
   read, so the edges of the bars (bright on one side) do not count as lines.

Each map gives its strongest value, the mean of its 8 and of its 32 strongest
values (all over the map's mean inside the film, so the atlas's contrast and
dose cancel), and the share of the film above four times that mean.
"""

from __future__ import annotations

import functools

import numpy as np

#: Gaussian scale of the Hessian, in pixels of the square as the network sees it.
RIDGE_SIGMA = 1.0
#: Length of the straight segments (pixels of the half-resolution ridge map).
SEGMENT = 9
#: Directions of the segments, evenly over 180 degrees.
N_ANGLES = 12
#: Features per square: 4 of the ridge map, 4 of the segment map.
N_LINE_FEATURES = 8


def line_features(stack: np.ndarray) -> np.ndarray:
    """Crack features of ``(n, s, s)`` normalised squares (module docstring).

    Parameters
    ----------
    stack
        ``(n, s, s)`` squares, normalised as for the network.

    Returns
    -------
    numpy.ndarray
        ``(n, N_LINE_FEATURES)`` float32.
    """
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(stack, dtype=np.float32))[:, None]
    n, s = x.shape[0], x.shape[-1]
    if n == 0:
        return np.zeros((0, N_LINE_FEATURES), np.float32)
    # The film: brighter than halfway between the bars (5th percentile) and the ice (90th).
    half = F.avg_pool2d(x, 2)
    flat = half.reshape(n, -1)
    k = flat.shape[1]
    bars = flat.kthvalue(max(1, int(0.05 * k)), dim=1).values
    ice = flat.kthvalue(max(1, int(0.9 * k)), dim=1).values
    film = (F.avg_pool2d(half, 3, 1, 1) > ((bars + ice) / 2).view(n, 1, 1, 1)).float()
    e = max(1, s // 32)
    inner = -F.max_pool2d(-film, 2 * e + 1, stride=1, padding=e) > 0.5
    ridge = F.max_pool2d(_ridge_strength(x, RIDGE_SIGMA), 2)
    segments = F.conv2d(ridge, _segment_kernels(), padding=SEGMENT // 2).amax(dim=1, keepdim=True)
    area = inner.reshape(n, -1).sum(dim=1).clamp(min=1)
    feats = []
    for m in (ridge, segments):
        inside = torch.where(inner, m, torch.zeros(())).reshape(n, -1)
        mean = (inside.sum(dim=1) / area).clamp(min=1e-4)
        top = inside.topk(min(32, inside.shape[1]), dim=1).values
        share = (inside > 4 * mean[:, None]).sum(dim=1) / area
        feats += [top[:, 0] / mean, top[:, :8].mean(dim=1) / mean, top.mean(dim=1) / mean, share]
    return torch.stack(feats, dim=1).numpy().astype(np.float32)


def _ridge_strength(x, sigma: float):
    """``sigma² max(0, -l1 - |l2|)`` of the Hessian at scale ``sigma`` (``l1 <= l2``)."""
    import torch
    import torch.nn.functional as F

    kernels = _hessian_kernels(sigma)
    r = kernels.shape[-1] // 2
    h = F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernels)
    hrr, hcc, hrc = h[:, 0:1], h[:, 1:2], h[:, 2:3]
    mean = (hrr + hcc) / 2
    spread = torch.sqrt(((hrr - hcc) / 2) ** 2 + hrc**2)
    low, high = mean - spread, mean + spread
    return sigma**2 * torch.clamp(-low - high.abs(), min=0)


@functools.cache
def _hessian_kernels(sigma: float):
    """``(3, 1, k, k)`` Gaussian second derivatives: along rows, along columns, mixed."""
    import torch

    r = int(np.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    g1 = -t / sigma**2 * g
    g2 = (t**2 / sigma**4 - 1 / sigma**2) * g
    g2 = g2 - g2.mean()  # the cut-off tails must not turn a flat brightness into a ridge
    return torch.stack([torch.outer(g2, g), torch.outer(g, g2), torch.outer(g1, g1)])[:, None]


@functools.cache
def _segment_kernels():
    """``(N_ANGLES, 1, SEGMENT, SEGMENT)`` averages along centred segments, one per direction."""
    import torch

    r = SEGMENT // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    kernels = []
    for a in np.arange(N_ANGLES) * np.pi / N_ANGLES:
        across = np.abs(-np.sin(a) * xx + np.cos(a) * yy)
        along = np.abs(np.cos(a) * xx + np.sin(a) * yy)
        k = np.clip(1 - across, 0, 1) * (along <= r)  # one pixel wide, antialiased
        kernels.append(k / k.sum())
    return torch.from_numpy(np.stack(kernels)[:, None].astype(np.float32))
