"""FastDepth (Wofk et al., ICRA 2019) on torchvision's MobileNetV2: the efficient baseline.

FastDepth is a MobileNet encoder, the NNConv5 decoder (five depthwise-separable 5x5 convolutions,
each followed by a nearest-neighbour 2x upsampling) and additive skips from the encoder at 1/8,
1/4 and 1/2 of the input. torchvision ships no MobileNetV1, so the encoder is MobileNetV2's
``features`` trunk, kept under torchvision's module names (``encoder.features.3.conv.1.0``), so its
ImageNet weights and published masks map onto ``encoder.*`` by prefix.

The skips are additive as in FastDepth, so a decoder stage is as wide as the encoder stage it
adds to: MobileNetV2 is 16/24/32 wide at 1/2, 1/4 and 1/8 (FastDepth's MobileNetV1 is 64/128/256),
and its decoder is narrower in proportion. Each upsampling goes to the size of the encoder's map
at that stride, which is exactly 2x at FastDepth's 224x224 and still adds up at 228x304, where
MobileNetV2's padded strides round up (228 -> 114 -> 57 -> 29 -> 15 -> 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2

from edgeticket.models.fcrn import DEPTH_PRIOR_M, Resize, depth_head

# the outputs of features[i] at 1/2, 1/4, 1/8 and 1/16 of the input (the last block at each stride)
SKIP_FEATURES = (1, 3, 6, 13)


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 ``features`` (classifier dropped); returns the maps the decoder uses."""

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        self.features = MobileNetV2(width_mult=width_mult).features  # torchvision's init, names kept
        self.out_channels = _block_out_channels(self.features[-1])
        self.skip_channels = tuple(_block_out_channels(self.features[i]) for i in SKIP_FEATURES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[1/2, 1/4, 1/8, 1/16 maps, the trunk's output at 1/32]."""
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in SKIP_FEATURES:
                maps.append(x)
        return maps + [x]


def _block_out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _conv_bn_relu(cin: int, cout: int, kernel: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class NNConv(nn.Module):
    """FastDepth's ``conv(in, out, 5)``: a depthwise 5x5 and a pointwise 1x1, each with BN and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__()
        self.dw = _conv_bn_relu(cin, cin, kernel, groups=cin)
        self.pw = _conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class NNConv5Decoder(nn.Module):
    """Five NNConv stages, each upsampled (nearest) to the next encoder stride's size; the 1/8, 1/4
    and 1/2 skips are added after the upsampling of stages 2, 3 and 4, as in FastDepth."""

    def __init__(self, in_channels: int, widths: Sequence[int], skip_channels: Sequence[int]):
        super().__init__()
        if len(widths) != 5:
            raise ValueError("decoder widths: five NNConv stages'")
        if tuple(widths[1:4]) != tuple(skip_channels[2::-1]):
            raise ValueError(f"decoder widths {tuple(widths)}: stages 2-4 add the 1/8, 1/4, 1/2 skips, "
                             f"so they must be {tuple(skip_channels[2::-1])} wide")
        chans = (in_channels, *widths)
        for i in range(5):
            setattr(self, f"conv{i + 1}", NNConv(chans[i], chans[i + 1]))
        self.out_channels = widths[4]

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        s2, s4, s8, s16, x = maps
        targets = (s16, s8, s4, s2)
        for i in range(5):
            x = getattr(self, f"conv{i + 1}")(x)
            if i < 4:
                x = F.interpolate(x, size=targets[i].shape[-2:], mode="nearest")
                if i >= 1:  # stages 2, 3, 4 add the 1/8, 1/4 and 1/2 maps
                    x = x + targets[i]
            else:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x


class FastDepth(nn.Module):
    """Depth in metres, N x 1 x H x W, for an N x 3 x H x W normalised RGB input.

    FastDepth's last layer is a pointwise conv to one channel; here it is ``head``, a 1x1 conv
    with a bias, started near a constant indoor depth as FCRN's head is (see ``FCRN``).
    """

    stem = "encoder.features.0.0"  # the first conv, outside the default pruning scope (FCRN's conv1)

    def __init__(self, encoder: MobileNetV2Encoder, decoder_widths: Sequence[int], depth_prior: float = DEPTH_PRIOR_M):
        super().__init__()
        self.encoder = encoder
        self.decoder = NNConv5Decoder(encoder.out_channels, decoder_widths, encoder.skip_channels)
        for m in self.decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.head = depth_head(self.decoder.out_channels, 1, depth_prior)
        self.resize = Resize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.decoder(self.encoder(x)))
        return self.resize(y, x.shape[-2:])

    def conv_bn_pairs(self) -> list[tuple[list[str], str]]:
        """(the conv a BN normalises, the BN), for folding: here every BN follows its conv directly."""
        pairs = []
        for name, mod in self.named_modules():
            kids = list(mod.named_children())
            for (a, ca), (b, cb) in zip(kids, kids[1:], strict=False):
                if isinstance(ca, nn.Conv2d) and isinstance(cb, nn.BatchNorm2d):
                    prefix = f"{name}." if name else ""
                    pairs.append(([f"{prefix}{a}"], f"{prefix}{b}"))
        return pairs
