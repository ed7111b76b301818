"""Counting multiply-accumulates (MACs) for one image, by layer type, with forward hooks.

Counted: Conv2d (output elements x input channels per group x kernel area), ConvTranspose2d
(input elements x output channels per group x kernel area; torch-pruning's counter multiplies
this by stride^2 too many), Linear, BatchNorm (one per element, gone once folded for export)
and the bilinear output resize (four per output element; torch-pruning's counter skips the
functional interpolate). Not counted: ReLU, max-pooling, residual adds, padding and the
up-projection's interleave, which are comparisons or memory moves.

``alive`` narrows a layer to the channels a channel ticket keeps: {module name: (in, out)}. A
depthwise conv (groups == in channels) loses its groups with its channels, so it stays one input
channel per output channel however narrow.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeticket.models.fcrn import Resize


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int], alive: dict[str, tuple[int, int]] | None = None,
               by_layer: bool = False) -> int | tuple[int, dict[str, int]]:
    alive = alive or {}
    per: dict[str, int] = {}
    hooks = []

    def conv_hook(name):
        def fn(mod, inp, out):
            cin, cout = alive.get(name, (mod.in_channels, mod.out_channels))
            k = mod.kernel_size[0] * mod.kernel_size[1]
            if isinstance(mod, nn.ConvTranspose2d):
                per[name] = per.get(name, 0) + inp[0][0, :1].numel() * cin * (cout // mod.groups) * k
            elif mod.groups > 1 and mod.groups == mod.in_channels:  # depthwise: one input channel per output
                per[name] = per.get(name, 0) + out[0, :1].numel() * cout * (mod.in_channels // mod.groups) * k
            else:
                per[name] = per.get(name, 0) + out[0, :1].numel() * cout * (cin // mod.groups) * k
        return fn

    def bn_hook(name):
        def fn(mod, inp, out):
            c = alive.get(name, (mod.num_features, mod.num_features))[1]
            per[name] = per.get(name, 0) + out[0, :1].numel() * c
        return fn

    def linear_hook(name):
        def fn(mod, inp, out):
            per[name] = per.get(name, 0) + out[0].numel() * mod.in_features
        return fn

    def resize_hook(name):
        def fn(mod, inp, out):
            per[name] = per.get(name, 0) + 4 * out[0].numel()
        return fn

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_hook(bn_hook(name)))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook(name)))
        elif isinstance(m, Resize):
            hooks.append(m.register_forward_hook(resize_hook(name)))
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, 3, *input_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    total = sum(per.values())
    return (total, per) if by_layer else total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
