"""Structural compaction: removing channels that are exactly zero, with Torch-Pruning.

A channel is removable when it is dead in every producer that Torch-Pruning's dependency graph
couples to it: each producer conv's weights (and bias) for the channel are zero, and so are
the weight and bias of every BatchNorm in the group, so the channel's output is exactly zero
wherever it flows (residual adds and the up-projection's interleave included). Those indices
are passed to ``get_pruning_group(..., idxs)`` explicitly; Torch-Pruning's own importance would
give zeroed filters non-zero scores through BN and the consumers' weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgeticket.errors import UserError
from edgeticket.tickets.groups import ChannelGroup, build_graph, channel_groups


class ParityError(UserError):
    """Two models that should agree do not; the export stops. Exit code 1."""

    exit_code = 1


@dataclass
class Compaction:
    model: nn.Module
    removed: dict[str, list[int]] = field(default_factory=dict)  # module -> removed output channels
    groups_pruned: int = 0
    channels_removed: int = 0
    channels_total: int = 0


@torch.no_grad()
def dead_channels(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    dead = torch.ones(group.channels, dtype=torch.bool)
    for p in group.producers:
        conv = model.get_submodule(p)
        dead &= (conv.weight.flatten(1) == 0).all(dim=1).cpu()
        if conv.bias is not None:
            dead &= (conv.bias == 0).cpu()
    if not group.bns:
        return dead
    for b in group.bns:
        bn = model.get_submodule(b)
        dead &= ((bn.weight == 0) & (bn.bias == 0)).cpu()
    return dead


@torch.no_grad()
def compact(model: nn.Module, size: tuple[int, int] = (64, 64)) -> Compaction:
    """A compacted copy of ``model`` (whose weights already carry the mask)."""
    m = copy.deepcopy(model).cpu().eval()
    dg = build_graph(m, size)
    groups = channel_groups(m, dg)
    result = Compaction(m)
    for g in groups:
        result.channels_total += g.channels
        dead = dead_channels(m, g)
        if dead.all():
            dead[0] = False  # a layer keeps one (zero) channel: a conv of width 0 cannot exist
        idxs = dead.nonzero().flatten().tolist()
        if not idxs:
            continue
        group = dg.get_pruning_group(m.get_submodule(g.producers[0]), tp.prune_conv_out_channels, idxs=idxs)
        group.prune()
        for name in g.producers + g.bns:
            result.removed[name] = idxs
        result.groups_pruned += 1
        result.channels_removed += len(idxs)
    return result


PARITY_FLOOR = 1e-2  # of max |ref|: the spread's floor, so float rounding of a near-constant output is not a failure


def parity_scale(ref: torch.Tensor) -> float:
    """The spread of ``ref`` (its std), floored at 1% of its largest magnitude."""
    ref = ref.double()
    return max(float(ref.std()) if ref.numel() > 1 else 0.0, PARITY_FLOOR * float(ref.abs().max()), 1e-12)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / the spread of ref).

    Relative to the spread, not to max |ref|: FCRN's head adds a bias of about 2.5 m, which
    would dwarf a change in what the network computes (a sign flip in a decoder conv moved the
    output by 1.7e-4 m, under 1e-4 of its maximum)."""
    diff = float((out.double() - ref.double()).abs().max())
    return diff, diff / parity_scale(ref)


@torch.no_grad()
def first_divergence(masked: nn.Module, compacted: nn.Module, removed: dict[str, list[int]], x: torch.Tensor,
                     tol: float) -> str | None:
    """The first conv/BN (in forward order) whose compacted output differs from the masked one."""
    outs: dict[str, list[tuple[str, torch.Tensor]]] = {"a": [], "b": []}

    def record(key, name):
        def fn(mod, inp, out):
            outs[key].append((name, out.detach()))
        return fn

    hooks = []
    for key, model in (("a", masked), ("b", compacted)):
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv2d | nn.BatchNorm2d):
                hooks.append(mod.register_forward_hook(record(key, name)))
    try:
        masked(x)
        compacted(x)
    finally:
        for h in hooks:
            h.remove()
    b = dict(outs["b"])
    for name, ref in outs["a"]:
        if name not in b:
            continue
        keep = [i for i in range(ref.shape[1]) if i not in set(removed.get(name, []))]
        _, rel = relative_error(b[name], ref[:, keep])
        if rel > tol:
            return name
    return None


def check_compaction(masked: nn.Module, c: Compaction, inputs: list[tuple[str, torch.Tensor]], tol: float = 1e-4) -> dict:
    """Compare compacted and masked outputs; raise ``ParityError`` naming the first diverging layer."""
    masked = masked.cpu().eval()
    results = {}
    for label, x in inputs:
        with torch.no_grad():
            abs_err, rel = relative_error(c.model(x), masked(x))
        results[label] = {"max_abs": abs_err, "max_rel": rel}
        if rel > tol:
            where = first_divergence(masked, c.model, c.removed, x, tol) or "the output"
            raise ParityError(
                f"compaction changed the output by {rel:.2e} relative on {label} inputs (limit {tol:g}); "
                f"the models first diverge at {where}; the ticket's channels are not exactly dead there."
            )
    return results
