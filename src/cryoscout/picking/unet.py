"""The DeepETPicker segmentation network: a 3D residual U-Net with coordinate
convolution and image-pyramid inputs.

Layout for the default ``channels=(24, 48, 72, 108)`` (``C = num_classes + 1``)::

    x (b, 1, D, H, W)
    enc1: [x, coords]                         -> ResBlock -> (b, 24, D, H, W)
    enc2: [avgpool(enc1), avgpool2(x), crd]   -> ResBlock -> (b, 48, D/2, H/2, W/2)
    enc3: [avgpool(enc2), avgpool4(x), crd]   -> ResBlock -> (b, 72, D/4, ...)
    enc4: [avgpool(enc3), avgpool8(x), crd]   -> ResBlock -> (b, 108, D/8, ...)
    dec3: [upconv(enc4) + enc3, crd]          -> ResBlock -> (b, 72, D/4, ...)
    dec2: [upconv(dec3) + enc2, crd]          -> ResBlock -> (b, 48, D/2, ...)
    dec1: [upconv(dec2) + enc1, crd]          -> ResBlock -> (b, 24, D, H, W)
    out:  1x1x1 conv                          -> (b, C, D, H, W) logits

``crd`` are three coordinate channels (normalised z, y, x) concatenated before
*every* residual block, average-pooled to each level's resolution. By default
(``coord_mode="patch"``, as in DeepETPicker) they span [-1, 1] across the input
patch. Callers that know where the patch lies in the tomogram may pass their own
``coords`` (``coord_mode="tomogram"``: [-1, 1] across the whole tomogram), which
makes the network's output independent of how the tomogram is tiled.

Skip connections are additive (``upconv(deeper) + encoder``), pooling is
average pooling, upsampling is a stride-2 transposed convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "deepetpicker-resunet3d"
COORD_MODES = ("patch", "tomogram")


class ResBlock3d(nn.Module):
    """Three 3x3x3 conv + BatchNorm + ReLU layers with a residual connection.

    The skip path is the identity, or a 1x1x1 convolution + BatchNorm when the
    number of channels changes. The last ReLU comes after the addition.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.conv3 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch)
        self.skip: nn.Module = (
            nn.Identity()
            if in_ch == out_ch
            else nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, bias=False), nn.BatchNorm3d(out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, in, d, h, w) -> (b, out, d, h, w)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.skip(x))


def patch_coords(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Coordinate channels ``(1, 3, d, h, w)`` (z, y, x) spanning [-1, 1] across ``shape``."""
    axes = [
        torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device)
        if n > 1
        else torch.zeros(1, dtype=like.dtype, device=like.device)
        for n in shape
    ]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zz, yy, xx])[None]


def tomogram_coords(
    start: Sequence[int], size: Sequence[int], full: Sequence[int], like: torch.Tensor
) -> torch.Tensor:
    """Coordinate channels ``(1, 3, *size)`` of a box inside a tomogram of shape ``full``.

    Voxel ``i`` of an axis of length ``n`` has coordinate ``-1 + 2 i / (n - 1)``, so the
    whole tomogram spans [-1, 1]; a box starting at ``start`` gets its slice of that.
    """
    axes = []
    for s, n, total in zip(start, size, full, strict=True):
        idx = torch.arange(s, s + n, dtype=like.dtype, device=like.device)
        axes.append(-1.0 + 2.0 * idx / max(total - 1, 1))
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zz, yy, xx])[None]


class ResUNet3d(nn.Module):
    """3D residual U-Net with coordinate convolution and image-pyramid inputs.

    Parameters
    ----------
    num_classes
        Particle classes; the network outputs ``num_classes + 1`` channels
        (channel 0 = background).
    channels
        Channels per encoder level, deepest last; the paper uses ``(24, 48, 72, 108)``.
        Fewer or narrower levels make small CPU runs possible.
    coord_mode
        ``"patch"`` (coordinates span the input patch) or ``"tomogram"`` (the caller
        passes the patch's coordinates in the tomogram); recorded with the weights.
    in_channels
        Image channels of the input (1 for a tomogram).
    """

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = (24, 48, 72, 108),
        coord_mode: str = "patch",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if coord_mode not in COORD_MODES:
            raise ValueError(f"coord_mode must be one of {COORD_MODES}, got {coord_mode!r}")
        if len(channels) < 1:
            raise ValueError("need at least one level")
        self.num_classes = int(num_classes)
        self.channels = tuple(int(c) for c in channels)
        self.coord_mode = coord_mode
        self.in_channels = int(in_channels)
        levels = len(self.channels)
        self.stride = 2 ** (levels - 1)  # inputs are padded to a multiple of this

        enc = []
        for i, ch in enumerate(self.channels):
            prev = self.in_channels if i == 0 else self.channels[i - 1] + self.in_channels
            enc.append(ResBlock3d(prev + 3, ch))  # + pyramid image (levels >= 2) + coords
        self.encoders = nn.ModuleList(enc)
        self.upconvs = nn.ModuleList(
            nn.ConvTranspose3d(self.channels[i + 1], self.channels[i], 2, stride=2)
            for i in range(levels - 1)
        )
        self.decoders = nn.ModuleList(
            ResBlock3d(self.channels[i] + 3, self.channels[i]) for i in range(levels - 1)
        )
        self.head = nn.Conv3d(self.channels[0], self.num_classes + 1, 1)

    def config(self) -> dict:
        """Constructor arguments, as stored with the weights."""
        return {
            "num_classes": self.num_classes,
            "channels": list(self.channels),
            "coord_mode": self.coord_mode,
            "in_channels": self.in_channels,
        }

    def forward(
        self,
        x: torch.Tensor,  # (b, in_channels, d, h, w)
        coords: torch.Tensor | None = None,  # (b or 1, 3, d, h, w) in [-1, 1]
    ) -> torch.Tensor:  # (b, num_classes + 1, d, h, w) logits
        """Class logits for every voxel; apply ``softmax(dim=1)`` for probabilities.

        Inputs whose sides are not multiples of ``self.stride`` are zero-padded at
        the far end and the output is cropped back.
        """
        b, _, d, h, w = x.shape
        if coords is None:
            coords = patch_coords((d, h, w), x)
        pad = [(-n) % self.stride for n in (d, h, w)]
        if any(pad):
            # F.pad takes the last axis first: (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi).
            spec = (0, pad[2], 0, pad[1], 0, pad[0])
            x = F.pad(x, spec)
            coords = F.pad(coords, spec, mode="replicate")
        coords = coords.expand(b, -1, -1, -1, -1)

        skips = []
        feat = x
        img, crd = x, coords
        for i, block in enumerate(self.encoders):
            if i > 0:
                feat = F.avg_pool3d(feat, 2)
                img = F.avg_pool3d(img, 2)  # image pyramid: x pooled by 2, 4, 8
                crd = F.avg_pool3d(crd, 2)  # coordinates of the coarser voxel centres
                feat = torch.cat([feat, img, crd], dim=1)
            else:
                feat = torch.cat([feat, crd], dim=1)
            feat = block(feat)
            skips.append((feat, crd))
        for i in reversed(range(len(self.decoders))):
            skip, crd = skips[i]
            feat = self.upconvs[i](feat) + skip  # additive skip connection
            feat = self.decoders[i](torch.cat([feat, crd], dim=1))
        out = self.head(feat)
        return out[:, :, :d, :h, :w]

    @torch.no_grad()
    def predict_proba(
        self, x: torch.Tensor, coords: torch.Tensor | None = None
    ) -> torch.Tensor:  # (b, C, d, h, w), sums to 1 over C
        """Softmax probabilities over background + classes."""
        return torch.softmax(self.forward(x, coords), dim=1)
