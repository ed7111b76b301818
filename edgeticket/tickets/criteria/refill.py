"""IMP-Refill (Chen et al., ICML 2022, Structure-LTH): unstructured IMP made into whole channels.

Structure-LTH's ``prune_model_custom_fillback`` (criterion ``remain``), called every round of
``main_imp_fillback.py``: after global magnitude pruning, each layer ranks its output channels
by their count of surviving weights and keeps the ``int(alive / filter_size)`` best as whole,
dense channels, so each layer keeps the parameter budget IMP gave it. Here it is group-aware:
the producers of one dependency group (the convs feeding a residual sum, the four
sub-convolutions of an up-projection) rank their shared channels by the summed count and keep
one width, rounded to ``round_to``; the group's BN is masked with the dropped channels, so they
compact away. A layer in scope outside every prunable group (coupled to a producer out of
scope) is refilled on its own, as a mask of whole rows that cannot compact.

Channels never come back: a channel dead in the previous mask stays dead.
"""

from __future__ import annotations

import torch

from edgeticket.tickets.criteria import Criterion, PruneContext, register_criterion
from edgeticket.tickets.criteria.common import (
    PruneResult,
    channel_alive,
    replace_channels,
    round_channels,
    stable_topk_mask,
    with_bn_entries,
)
from edgeticket.tickets.criteria.magnitude import magnitude_global
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask


def _keep(counts: torch.Tensor, alive_before: torch.Tensor, filter_size: int, round_to: int) -> torch.Tensor:
    channels = counts.numel()
    n = int(int(counts.sum()) / filter_size)
    n = min(round_channels(n, round_to, channels), channels, max(1, int(alive_before.sum())))
    scores = torch.where(alive_before, counts.double(), torch.full((channels,), -1.0, dtype=torch.float64))
    return stable_topk_mask(scores, n)


def refill(pruned: Mask, groups: list[ChannelGroup], round_to: int = 8, before: Mask | None = None) -> Mask:
    """The channel ticket of an unstructured mask ``pruned``: per group (or lone layer) the
    ``int(alive / filter_size)`` channels with the most surviving weights, dense; channels dead in
    ``before`` (default: ``pruned``) are never kept."""
    before = before if before is not None else pruned
    out = with_bn_entries(Mask(pruned), groups)
    grouped = set()
    for g in groups:
        names = g.weight_names()
        counts = sum(pruned[w].flatten(1).sum(dim=1) for w in names)
        filter_size = sum(int(pruned[w][0].numel()) for w in names)
        alive = channel_alive(before, g) if all(w in before for w in names) else torch.ones(g.channels, dtype=torch.bool)
        replace_channels(out, g, _keep(counts, alive, filter_size, round_to))
        grouped |= set(names)
    for k in out.weight_keys():
        if k in grouped:
            continue
        m = pruned[k]
        keep = _keep(m.flatten(1).sum(dim=1), before[k].flatten(1).any(dim=1), int(m[0].numel()), round_to)
        out[k] = keep.view(-1, *([1] * (m.dim() - 1))).expand_as(m).clone()
    return out


@register_criterion
class Refill(Criterion):
    name = "refill"
    structured = True
    description = ("structured; IMP-Refill: global magnitude pruning, then each group keeps int(alive / filter size) "
                   "whole channels with the most survivors (Structure-LTH)")

    def prune(self, weights, mask: Mask, density: float, ctx: PruneContext) -> PruneResult:
        res = magnitude_global(weights, mask, density)
        if ctx.latency is not None:  # a latency budget: the survivor counts are the channels' importance
            from edgeticket.tickets.budget import prune_within_budget

            def survivors(_m: Mask, g: ChannelGroup) -> torch.Tensor:
                return sum(res.mask[w].flatten(1).sum(dim=1) for w in g.weight_names())

            return prune_within_budget(weights, mask, ctx.groups, ctx.latency, ctx.round_to, scores=survivors)
        return PruneResult(refill(res.mask, ctx.groups, ctx.round_to, before=mask), res.notes)
