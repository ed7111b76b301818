"""Rebuilding a compacted model from its shapes (timm's ``adapt_model_from_file`` idea).

A compacted model is stored as a plain state dict plus the width of every conv and BN in
``meta.json``; the builder makes the full model and swaps in layers of those widths. No
pickled modules, no replay of a pruning history.
"""

from __future__ import annotations

from torch import nn


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """{module name: [in, out]} for every conv, [features, features] for every BN."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = [m.num_features, m.num_features]
    return out


def adapt_widths(model: nn.Module, widths: dict[str, list[int]]) -> nn.Module:
    """Swap in convs and BNs of the given widths (weights are loaded afterwards)."""
    for name, (cin, cout) in widths.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        if isinstance(old, nn.Conv2d):
            if (old.in_channels, old.out_channels) == (cin, cout):
                continue
            depthwise = old.groups > 1 and old.groups == old.in_channels == old.out_channels
            groups = cin if depthwise else old.groups  # a depthwise conv keeps one group per channel
            new = nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation,
                            groups, old.bias is not None, old.padding_mode)
        elif isinstance(old, nn.BatchNorm2d):
            if old.num_features == cout:
                continue
            new = nn.BatchNorm2d(cout, old.eps, old.momentum, old.affine, old.track_running_stats)
        else:
            raise ValueError(f"{name}: cannot adapt a {type(old).__name__}")
        setattr(parent, attr, new)
    return model
