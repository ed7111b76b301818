"""Folding BatchNorm into the convolutions before export.

ONNX Runtime fuses Conv+BN only when BN directly follows the conv. Behind an up-projection's
interleave (Concat/Reshape) it cannot, and a plain export of the fast decoder leaves 8 BNs
unfused. BN is per channel, so it folds exactly into each of the four sub-convolutions.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing bn(conv(x)) in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused = fused.to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BN folded into its convs and replaced by Identity."""
    folded = copy.deepcopy(model).eval()
    for convs, bn_name in folded.conv_bn_pairs():
        bn = folded.get_submodule(bn_name)
        for c in convs:
            _set(folded, c, fold_conv_bn(folded.get_submodule(c), bn))
        _set(folded, bn_name, nn.Identity())
    left = [n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise RuntimeError(f"BatchNorm layers without a known conv: {left}")
    return folded
