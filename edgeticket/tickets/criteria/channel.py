"""Channel pruning: whole output channels of each coupled group, ranked by L1 norm."""

from __future__ import annotations

import torch

from edgeticket.tickets.criteria import Criterion, PruneContext, register_criterion
from edgeticket.tickets.criteria.common import (
    PruneResult,
    channel_alive,
    channel_scores,
    round_channels,
    set_channels,
    stable_topk_mask,
    with_bn_entries,
)
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask


def prune_channels(weights: dict[str, torch.Tensor], mask: Mask, groups: list[ChannelGroup], density: float,
                   round_to: int = 8) -> PruneResult:
    """Keep ``density`` of each group's channels (rounded to ``round_to``), ranked by L1 norm."""
    out, notes = with_bn_entries(mask, groups), []
    for g in groups:
        alive = channel_alive(out, g)
        n_alive = int(alive.sum())
        keep_n = min(n_alive, round_channels(g.channels * density, round_to, g.channels))
        if int(round(g.channels * density / max(round_to, 1))) == 0:
            notes.append(f"{g.name}: held at its floor of {n_alive} channels to avoid layer collapse")
        scores = torch.where(alive, channel_scores(weights, out, g), torch.full((g.channels,), -1.0, dtype=torch.float64))
        keep = stable_topk_mask(scores, keep_n)
        set_channels(out, g, keep)
    return PruneResult(out, notes)



@register_criterion
class ChannelL1(Criterion):
    name = "channel"
    structured = True
    description = "structured; whole output channels of each coupled group by L1 norm"

    def prune(self, weights, mask: Mask, density: float, ctx: PruneContext) -> PruneResult:
        if ctx.latency is not None:
            from edgeticket.tickets.budget import prune_to_latency

            return prune_to_latency(weights, mask, ctx.groups, ctx.latency, ctx.round_to)
        return prune_channels(weights, mask, ctx.groups, density, ctx.round_to)
