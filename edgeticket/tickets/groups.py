"""Coupled channels, from Torch-Pruning's DependencyGraph (the one source of truth).

A ``ChannelGroup`` is a set of output channels that must be removed together: the producers
(convs whose output channels they are, e.g. every conv feeding one residual sum, or the four
sub-convolutions of an up-projection), the BatchNorms behind them, and the consumers (convs
that read them as input channels). Ranking is ours (``criteria``); grouping is the graph's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn


@dataclass
class ChannelGroup:
    producers: list[str]  # conv module names whose output channels these are
    bns: list[str]  # BatchNorm module names over these channels
    consumers: list[str]  # conv module names reading these channels as input
    channels: int
    index: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.producers[0]

    def weight_names(self) -> list[str]:
        return [f"{p}.weight" for p in self.producers]

    def bn_param_names(self) -> list[str]:
        return [f"{b}.{k}" for b in self.bns for k in ("weight", "bias")]


def example_input(size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    return torch.randn(1, 3, *size)


def build_graph(model: nn.Module, size: tuple[int, int] = (64, 64)) -> tp.DependencyGraph:
    was = model.training
    model.eval()
    with torch.enable_grad():  # the graph is traced through autograd
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(size).to(_device(model)))
    model.train(was)
    return dg


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def channel_groups(model: nn.Module, dg: tp.DependencyGraph | None = None, size: tuple[int, int] = (64, 64)) -> list[ChannelGroup]:
    """Every group of coupled conv output channels, in a stable order (by first producer name)."""
    dg = dg or build_graph(model, size)
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for g in dg.get_all_groups(root_module_types=[nn.Conv2d]):
        producers, bns, consumers = [], [], []
        for dep, _idxs in g:
            mod = dep.target.module
            if mod not in names:
                continue
            if isinstance(mod, nn.Conv2d):
                (producers if dg.is_out_channel_pruning_fn(dep.handler) else consumers).append(names[mod])
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                bns.append(names[mod])
        if not producers:
            continue
        channels = model.get_submodule(producers[0]).out_channels
        groups.append(ChannelGroup(sorted(set(producers)), sorted(set(bns)), sorted(set(consumers)), channels))
    groups.sort(key=lambda g: g.name)
    for i, g in enumerate(groups):
        g.index = i
    return groups


def prunable_groups(groups: list[ChannelGroup], scope: set[str]) -> list[ChannelGroup]:
    """Groups whose every producer weight is in scope: only those can lose channels."""
    return [g for g in groups if all(w in scope for w in g.weight_names())]
