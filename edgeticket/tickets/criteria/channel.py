"""Channel pruning: whole output channels of each coupled group, ranked by L1 norm.

The level's density is a fraction of the prunable weights that survive compaction (effective
density, ``tickets.sparsity``): removing a channel also removes its consumers' input-channel
weights, so keeping a fraction f of every group's channels keeps about f^2 of the weights, not
f. The criterion solves for the one channel fraction f, shared by every group (each group keeps
``round(channels * f)`` channels, rounded to ``round_to``, its best by L1 norm), whose mask's
effective density is closest to the level's target, by bisection on f. Level k of a channel
search then holds the same parameter budget as level k of an unstructured one, (1 - rate)^k,
within the rounding of the widths.
"""

from __future__ import annotations

import torch

from edgeticket.tickets.criteria import Criterion, PruneContext, register_criterion
from edgeticket.tickets.criteria.common import (
    PruneResult,
    channel_alive,
    channel_scores,
    keep_fraction,
    set_channels,
    with_bn_entries,
)
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask

_BISECTIONS = 30


class _EffectiveCounter:
    """Counts the weights that survive compaction when each group keeps a given set of channels.

    Per prunable weight, the mask's alive count per (output, input) channel pair is kept once;
    a choice of channels then costs one matrix-vector product per layer.
    """

    def __init__(self, mask: Mask, groups: list[ChannelGroup]):
        self.pairs = {k: mask[k].flatten(2).sum(2).double() for k in mask.weight_keys()}
        self.out_group: dict[str, int] = {}
        self.in_group: dict[str, int] = {}
        for i, g in enumerate(groups):
            for p in g.producers:
                self.out_group[f"{p}.weight"] = i
            for c in g.consumers:
                w = f"{c}.weight"
                if w in self.pairs and self.pairs[w].shape[1] == g.channels:
                    self.in_group[w] = i
        self.total = sum(int(mask[k].numel()) for k in mask.weight_keys())

    def alive(self, keeps: list[torch.Tensor]) -> float:
        n = 0.0
        for k, pc in self.pairs.items():
            o = keeps[self.out_group[k]].double() if k in self.out_group else torch.ones(pc.shape[0], dtype=torch.float64)
            i = keeps[self.in_group[k]].double() if k in self.in_group else torch.ones(pc.shape[1], dtype=torch.float64)
            n += float(o @ pc @ i)
        return n


def prune_channels(weights: dict[str, torch.Tensor], mask: Mask, groups: list[ChannelGroup], density: float,
                   round_to: int = 8) -> PruneResult:
    """Keep the best channels (L1) of each group, one fraction for all, so that the effective
    density is as close to ``density`` as the widths allow."""
    out, notes = with_bn_entries(mask, groups), []
    alive = [channel_alive(out, g) for g in groups]
    scores = [channel_scores(weights, out, g) for g in groups]

    def keeps(f: float) -> list[torch.Tensor]:
        return [keep_fraction(g, a, s, f, round_to) for g, a, s in zip(groups, alive, scores, strict=True)]

    counter = _EffectiveCounter(out, groups)
    target = density * counter.total
    lo, hi = 0.0, 1.0  # alive(keeps(lo)) < target <= alive(keeps(hi)), or the floors at lo
    if counter.alive(keeps(hi)) > target:
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            if counter.alive(keeps(mid)) >= target:
                hi = mid
            else:
                lo = mid
        f = lo if abs(counter.alive(keeps(lo)) - target) < abs(counter.alive(keeps(hi)) - target) else hi
    else:
        f = hi
    chosen = keeps(f)
    for g, keep in zip(groups, chosen, strict=True):
        if int(round(g.channels * f / max(round_to, 1))) == 0:
            notes.append(f"{g.name}: held at its floor of {int(keep.sum())} channels to avoid layer collapse")
        set_channels(out, g, keep)
    return PruneResult(out, notes)


@register_criterion
class ChannelL1(Criterion):
    name = "channel"
    structured = True
    description = "structured; whole output channels of each coupled group by L1 norm, at the level's effective density"

    def prune(self, weights, mask: Mask, density: float, ctx: PruneContext) -> PruneResult:
        if ctx.latency is not None:
            from edgeticket.tickets.budget import prune_within_budget

            return prune_within_budget(weights, mask, ctx.groups, ctx.latency, ctx.round_to)
        return prune_channels(weights, mask, ctx.groups, density, ctx.round_to)
