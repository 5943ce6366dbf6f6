"""XCryoNet (Xu, Timm & Elhabian, MICCAI 2020) and its primary-only variant.

The architecture follows section 2 of the paper:

* **primary branch**: a feature network (one convolution + two ResBlocks), a
  primary classifier (pooling, two fully connected layers regressing the four
  attributes, two more regressing the overall score from those attributes) and
  a decoder after the second ResBlock (two transposed convolutions + one
  convolution) that reconstructs the input;
* **attention guidance**: the primary feature channels are split evenly, the
  first half for cracking and the second for contamination; each half is
  max-pooled across channels, upsampled to the input size and passed through a
  sigmoid; the attribute branch sees ``map * image``;
* **attribute branches** (cracking, contamination): the same design, each
  regressing its one attribute and reconstructing its own weighted input;
* **fusion branch**: the primary and attribute feature maps concatenated,
  regressing all five scores; its output is XCryoNet's final prediction.

The feature networks downsample by 4 (a stride-2 convolution and a stride-2
ResBlock), so the two stride-2 transposed convolutions of the decoder return
to the input size; attention maps are therefore computed at 1/4 resolution
and upsampled bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Score columns, in the order of every label and prediction array.
SCORES: tuple[str, ...] = ("brightness", "squareness", "cracking", "contamination", "overall")
#: The attributes that get their own attention-guided branch.
ATTENTION_ATTRIBUTES: tuple[str, ...] = ("cracking", "contamination")
#: Index of each attention attribute in :data:`SCORES`.
ATTRIBUTE_INDEX = {name: SCORES.index(name) for name in ATTENTION_ATTRIBUTES}
VARIANTS = ("primary", "xcryonet")


class ResBlock(nn.Module):
    """A basic residual block (He et al. 2016): two 3x3 convolutions + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, c_in, h, w) -> (b, c_out, h', w')
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class FeatureNet(nn.Module):
    """One convolution and two ResBlocks: ``(b, 1, s, s) -> (b, 2w, s/4, s/4)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.block1 = ResBlock(width, 2 * width, stride=2)
        self.block2 = ResBlock(2 * width, 2 * width, stride=1)
        self.out_channels = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(self.stem(x)))


class Decoder(nn.Module):
    """Two transposed convolutions + one convolution: ``(b, c, s/4, s/4) -> (b, 1, s, s)``."""

    def __init__(self, c_in: int, width: int) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(c_in, width, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.up1(f))
        x = F.relu(self.up2(x))
        return self.out(x)


class Classifier(nn.Module):
    """Pooling, two FC layers to ``n_attributes``, optionally two more FC to the overall score.

    The overall score is regressed from the predicted attributes only, so that
    it depends explicitly on them (the paper's design).
    """

    def __init__(self, c_in: int, n_attributes: int, with_overall: bool, hidden: int = 64) -> None:
        super().__init__()
        self.attributes = nn.Sequential(
            nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_attributes)
        )
        self.overall: nn.Module | None = None
        if with_overall:
            self.overall = nn.Sequential(
                nn.Linear(n_attributes, hidden // 2),
                nn.ReLU(inplace=True),
                nn.Linear(hidden // 2, 1),
            )

        # Start every score at the middle of the 0-4 scale: short runs on few labels
        # then learn deviations instead of first climbing from 0.
        for head in (self.attributes, self.overall):
            if head is not None:
                nn.init.constant_(head[-1].bias, 2.0)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (b, c, h, w) -> (b, k)
        pooled = f.mean(dim=(2, 3))  # (b, c)
        attrs = self.attributes(pooled)  # (b, n_attributes)
        if self.overall is None:
            return attrs
        return torch.cat([attrs, self.overall(attrs)], dim=1)  # (b, n_attributes + 1)


class Branch(nn.Module):
    """Feature network + classifier + decoder: the primary and attribute branches."""

    def __init__(self, width: int, n_attributes: int, with_overall: bool) -> None:
        super().__init__()
        self.features = FeatureNet(width)
        self.classifier = Classifier(self.features.out_channels, n_attributes, with_overall)
        self.decoder = Decoder(self.features.out_channels, width)


@dataclass
class XCryoNetOutput:
    """Everything one forward pass produces; the shape of each tensor is noted."""

    scores: torch.Tensor  # (b, 5) final prediction (fusion for xcryonet, primary otherwise)
    primary_scores: torch.Tensor  # (b, 5)
    primary_recon: torch.Tensor | None  # (b, 1, s, s)
    primary_features: torch.Tensor  # (b, 2w, s/4, s/4)
    attention: dict[str, torch.Tensor]  # name -> (b, 1, s, s) in (0, 1)
    weighted: dict[str, torch.Tensor]  # name -> (b, 1, s, s) attention * image
    attribute_scores: dict[str, torch.Tensor]  # name -> (b,)
    attribute_features: dict[str, torch.Tensor]  # name -> (b, 2w, s/4, s/4)
    attribute_recon: dict[str, torch.Tensor]  # name -> (b, 1, s, s)
    fusion_scores: torch.Tensor | None  # (b, 5)


class XCryoNet(nn.Module):
    """XCryoNet, or its primary branch alone (``variant="primary"``).

    Parameters
    ----------
    variant
        ``"xcryonet"`` (primary + attention-guided attribute branches + fusion)
        or ``"primary"`` (the primary branch alone, no attention).
    size
        Input side length in pixels; must be a multiple of 4.
    width
        Channels of the first convolution; feature maps have ``2 * width``.
    """

    def __init__(self, variant: str = "xcryonet", size: int = 128, width: int = 16) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        if size % 4:
            raise ValueError(f"size must be a multiple of 4, not {size}")
        self.variant, self.size, self.width = variant, size, width
        self.primary = Branch(width, n_attributes=4, with_overall=True)
        self.attribute_branches = nn.ModuleDict()
        self.fusion: nn.Module | None = None
        if variant == "xcryonet":
            c = self.primary.features.out_channels
            if c % len(ATTENTION_ATTRIBUTES):
                raise ValueError("feature channels must split evenly between attribute branches")
            for name in ATTENTION_ATTRIBUTES:
                self.attribute_branches[name] = Branch(width, n_attributes=1, with_overall=False)
            n_branches = 1 + len(ATTENTION_ATTRIBUTES)
            self.fusion = nn.Sequential(
                nn.Conv2d(n_branches * c, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                Classifier(c, n_attributes=4, with_overall=True),
            )

    # -- pieces, used by the three-step training ---------------------------------------------
    def attention_maps(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attention maps from the primary feature maps.

        Parameters
        ----------
        features
            ``(b, c, s/4, s/4)`` primary feature maps.

        Returns
        -------
        dict
            ``"cracking"``, ``"contamination"`` -> ``(b, 1, s, s)`` maps in (0, 1).
        """
        halves = torch.chunk(features, len(ATTENTION_ATTRIBUTES), dim=1)  # each (b, c/2, h, w)
        maps = {}
        for name, half in zip(ATTENTION_ATTRIBUTES, halves, strict=True):
            pooled = half.amax(dim=1, keepdim=True)  # (b, 1, s/4, s/4): channel-wise max
            up = F.interpolate(pooled, size=(self.size, self.size), mode="bilinear")
            maps[name] = torch.sigmoid(up)  # (b, 1, s, s)
        return maps

    def fuse(self, primary_f: torch.Tensor, attribute_f: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fusion branch: ``(b, 5)`` scores from the concatenated branch feature maps."""
        assert self.fusion is not None
        stacked = torch.cat([primary_f, *(attribute_f[n] for n in ATTENTION_ATTRIBUTES)], dim=1)
        return self.fusion(stacked)

    def forward(self, x: torch.Tensor, reconstruct: str = "all") -> XCryoNetOutput:
        """Run every branch.

        Parameters
        ----------
        x
            ``(b, 1, s, s)`` normalised squares.
        reconstruct
            Which decoders run: ``"all"``, ``"primary"`` or ``"none"`` (inference).
        """
        if reconstruct not in ("all", "primary", "none"):
            raise ValueError(f"reconstruct must be all, primary or none, not {reconstruct!r}")
        pf = self.primary.features(x)  # (b, 2w, s/4, s/4)
        pscores = self.primary.classifier(pf)  # (b, 5)
        precon = None if reconstruct == "none" else self.primary.decoder(pf)  # (b, 1, s, s)
        out = XCryoNetOutput(
            scores=pscores,
            primary_scores=pscores,
            primary_recon=precon,
            primary_features=pf,
            attention={},
            weighted={},
            attribute_scores={},
            attribute_features={},
            attribute_recon={},
            fusion_scores=None,
        )
        if self.variant == "primary":
            return out
        out.attention = self.attention_maps(pf)
        for name, branch in self.attribute_branches.items():
            w = out.attention[name] * x  # (b, 1, s, s)
            f = branch.features(w)
            out.weighted[name] = w
            out.attribute_features[name] = f
            out.attribute_scores[name] = branch.classifier(f)[:, 0]  # (b,)
            if reconstruct == "all":
                out.attribute_recon[name] = branch.decoder(f)
        out.fusion_scores = self.fuse(pf, out.attribute_features)  # (b, 5)
        out.scores = out.fusion_scores
        return out

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each training step updates.

        Returns
        -------
        dict
            ``"step1"``: every feature network, the primary and attribute
            classifiers and the primary decoder; ``"step2"``: the attribute
            branches' feature networks and decoders; ``"step3"``: the fusion
            branch. For ``primary`` only ``step1`` is non-empty.
        """
        step1 = [
            *self.primary.features.parameters(),
            *self.primary.classifier.parameters(),
            *self.primary.decoder.parameters(),
        ]
        step2: list[nn.Parameter] = []
        for branch in self.attribute_branches.values():
            step1 += [*branch.features.parameters(), *branch.classifier.parameters()]
            step2 += [*branch.features.parameters(), *branch.decoder.parameters()]
        step3 = list(self.fusion.parameters()) if self.fusion is not None else []
        return {"step1": step1, "step2": step2, "step3": step3}
