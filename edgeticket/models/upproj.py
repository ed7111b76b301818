"""Laina et al.'s up-projection, computed the fast way.

"Unpool, then 5x5 conv" puts each input value at the top-left of a 2x2 block of zeros and
convolves. Three quarters of that work multiplies zeros. The same result comes from four
small convolutions of the low-resolution map, one per output parity, interleaved:

| sub-conv | slice of the 5x5 kernel | F.pad (l, r, t, b) | placed at |
|---|---|---|---|
| a (3x3) | w[:, :, 0::2, 0::2] | (1, 1, 1, 1) | even row, even col |
| b (2x3) | w[:, :, 1::2, 0::2] | (1, 1, 0, 1) | odd row, even col |
| c (3x2) | w[:, :, 0::2, 1::2] | (0, 1, 1, 1) | even row, odd col |
| d (2x2) | w[:, :, 1::2, 1::2] | (0, 1, 0, 1) | odd row, odd col |

The interleave stacks on new spatial axes and reshapes. It never mixes the channel axis, so
Torch-Pruning's dependency graph sees it as element-wise for channels (it leaves reshapes of
5-D tensors unmapped) and channel indices pass through it unchanged. ``pixel_shuffle`` would
mix channels, and Torch-Pruning 1.6 maps no index through it (its issue #420).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (kernel slice rows, kernel slice cols, F.pad) for a, b, c, d.
SUBCONVS = {
    "a": (slice(0, None, 2), slice(0, None, 2), (1, 1, 1, 1)),
    "b": (slice(1, None, 2), slice(0, None, 2), (1, 1, 0, 1)),
    "c": (slice(0, None, 2), slice(1, None, 2), (0, 1, 1, 1)),
    "d": (slice(1, None, 2), slice(1, None, 2), (0, 1, 0, 1)),
}


def interleave(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Place a, b, c, d (each N,C,H,W) at (even,even), (odd,even), (even,odd), (odd,odd)."""
    n, ch, h, w = a.shape
    even_rows = torch.stack((a, c), dim=-1).reshape(n, ch, h, 2 * w)
    odd_rows = torch.stack((b, d), dim=-1).reshape(n, ch, h, 2 * w)
    return torch.stack((even_rows, odd_rows), dim=3).reshape(n, ch, 2 * h, 2 * w)


class FastUpConv(nn.Module):
    """Zero-unpool x2 followed by a 5x5 conv, as four sub-convolutions (exact).

    It is initialised as the 5x5 conv it stands for: a 5x5 kernel is drawn (on the 5x5 fan, from
    the same random numbers ``nn.Conv2d(in, out, 5)`` would draw) and sliced into a, b, c, d, so
    that the naive and the fast form are the same model at init, not only the same function.
    Each sub-conv initialised on its own fan would be 1.7-2.5x wider than the 5x5's taps, and
    magnitude pruning of a fresh decoder would then rank the taps by which sub-conv holds them.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        # no random draw here: reset_parameters draws the 5x5 kernel once, for all four
        self.a = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, (3, 3), bias=bias)
        self.b = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, (2, 3), bias=bias)
        self.c = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, (3, 2), bias=bias)
        self.d = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, (2, 2), bias=bias)
        self.reset_parameters()

    def _conv_5x5(self) -> nn.Conv2d:
        """The 5x5 conv the four sub-convs are slices of, uninitialised (no random draw)."""
        a = self.a
        return nn.utils.skip_init(nn.Conv2d, a.in_channels, a.out_channels, 5, bias=a.bias is not None,
                                  device=a.weight.device, dtype=a.weight.dtype)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default initialisation of the 5x5 conv, sliced."""
        conv = self._conv_5x5()
        conv.reset_parameters()
        self.load_from_5x5(conv.weight, conv.bias)

    @torch.no_grad()
    def init_5x5_(self, init: Callable[[torch.Tensor], object]) -> None:
        """Initialise the 5x5 kernel with ``init`` (e.g. Kaiming on the 5x5's fan) and slice it."""
        weight = self._conv_5x5().weight
        init(weight)
        self.load_from_5x5(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [getattr(self, k)(F.pad(x, SUBCONVS[k][2])) for k in "abcd"]
        return interleave(*outs)

    @torch.no_grad()
    def load_from_5x5(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        for k in "abcd":
            rows, cols, _ = SUBCONVS[k]
            conv = getattr(self, k)
            conv.weight.copy_(weight[:, :, rows, cols])
            if bias is not None and conv.bias is not None:
                conv.bias.copy_(bias)


class NaiveUpConv(nn.Module):
    """The reference: unpool to the top-left of each 2x2 block, then a 5x5 conv ('same')."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        up = x.new_zeros(n, ch, 2 * h, 2 * w)
        up[:, :, 0::2, 0::2] = x
        return self.conv(up)


class UpProjection(nn.Module):
    """Laina's up-projection: two branches from one unpooled map, summed.

    branch 1: upconv5x5 -> BN -> ReLU -> conv3x3 -> BN
    branch 2: upconv5x5 -> BN
    out = ReLU(branch 1 + branch 2)
    """

    def __init__(self, in_channels: int, out_channels: int, fast: bool = True):
        super().__init__()
        upconv = FastUpConv if fast else NaiveUpConv
        self.conv1 = upconv(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.proj = upconv(in_channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.bn3(self.proj(x)))
