"""FCRN (Laina et al. 2016): a ResNet encoder and an up-projection decoder.

The encoder keeps torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...)
so ImageNet weights and published ImageNet tickets map onto ``encoder.*`` by prefix alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from edgeticket.models.upproj import FastUpConv, UpProjection


def _kaiming(weight: torch.Tensor) -> None:
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def init_conv_bn(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming (fan out) convs, BN at identity.

    A fast up-projection's 5x5 kernel is drawn whole on the 5x5's fan and sliced, exactly as the
    naive 5x5 conv is drawn; its four sub-convs are then left alone (not redrawn on their own fan).
    """
    sliced: set[int] = set()
    for m in module.modules():
        if isinstance(m, FastUpConv):
            m.init_5x5_(_kaiming)
            sliced.update(id(c) for c in m.children())
        elif isinstance(m, nn.Conv2d) and id(m) not in sliced:
            _kaiming(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetEncoder(nn.Module):
    """torchvision's ResNet trunk without avgpool/fc, with a configurable base width."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int], width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.out_channels = width * 8 * block.expansion
        init_conv_bn(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # torchvision's Bottleneck derives its inner width as planes * base_width / 64.
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Decoder(nn.Module):
    """1x1 conv + BN, then four up-projections, each doubling the resolution."""

    def __init__(self, in_channels: int, widths: Sequence[int], fast: bool = True):
        super().__init__()
        if len(widths) != 5:
            raise ValueError("decoder widths: the 1x1 conv's width and four up-projections'")
        self.conv = nn.Conv2d(in_channels, widths[0], 1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        self.up1 = UpProjection(widths[0], widths[1], fast)
        self.up2 = UpProjection(widths[1], widths[2], fast)
        self.up3 = UpProjection(widths[2], widths[3], fast)
        self.up4 = UpProjection(widths[3], widths[4], fast)
        self.out_channels = widths[4]
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.up4(self.up3(self.up2(self.up1(x))))


class Resize(nn.Module):
    """Bilinear resize to the input's size: the decoder's grid is padded, not the input's extent."""

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


DEPTH_PRIOR_M = 2.5  # about NYU Depth v2's mean depth


def depth_head(channels: int, kernel: int, depth_prior: float = DEPTH_PRIOR_M) -> nn.Conv2d:
    """The last conv, to one depth channel, started near a constant ``depth_prior`` (see ``FCRN``
    for why); FCRN and FastDepth share it."""
    head = nn.Conv2d(channels, 1, kernel, padding=kernel // 2, bias=True)
    nn.init.normal_(head.weight, std=1e-3)
    nn.init.constant_(head.bias, depth_prior)
    return head


class FCRN(nn.Module):
    """Depth in metres, N x 1 x H x W, for an N x 3 x H x W normalised RGB input.

    The head starts near a constant at a typical indoor depth: small weights and the bias at
    ``depth_prior``. With the default (Kaiming) head, an untrained model's output swings by
    metres, and the quickest way for SGD to cut that loss is to push the last up-projection's
    BN biases negative until all its ReLUs are dead: the model then predicts a constant for
    good (seen on the synthetic rooms, for every learning rate tried).
    """

    def __init__(self, encoder: ResNetEncoder, decoder_widths: Sequence[int], fast: bool = True,
                 depth_prior: float = DEPTH_PRIOR_M):
        super().__init__()
        self.encoder = encoder
        self.decoder = Decoder(encoder.out_channels, decoder_widths, fast)
        self.head = depth_head(self.decoder.out_channels, 3, depth_prior)
        self.resize = Resize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.decoder(self.encoder(x)))
        return self.resize(y, x.shape[-2:])

    def conv_bn_pairs(self) -> list[tuple[list[str], str]]:
        """(the convs a BN normalises, the BN), for folding. An up-projection's BN sits behind the
        interleave of four sub-convolutions; BN is per channel, so it folds into each of them."""
        pairs = []
        for name, mod in self.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(mod, BasicBlock | Bottleneck):
                for k in (1, 2, 3):
                    if hasattr(mod, f"bn{k}"):
                        pairs.append(([f"{prefix}conv{k}"], f"{prefix}bn{k}"))
                if mod.downsample is not None:
                    pairs.append(([f"{prefix}downsample.0"], f"{prefix}downsample.1"))
            elif isinstance(mod, UpProjection):
                for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("proj", "bn3")):
                    sub = getattr(mod, conv)
                    convs = [f"{prefix}{conv}.{k}" for k in "abcd"] if hasattr(sub, "a") else (
                        [f"{prefix}{conv}.conv"] if hasattr(sub, "conv") else [f"{prefix}{conv}"])
                    pairs.append((convs, f"{prefix}{bn}"))
            elif isinstance(mod, ResNetEncoder):
                pairs.append(([f"{prefix}conv1"], f"{prefix}bn1"))
            elif isinstance(mod, Decoder):
                pairs.append(([f"{prefix}conv"], f"{prefix}bn"))
        return pairs
