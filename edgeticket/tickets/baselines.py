"""The masks of the controls: random pruning, the reverse mask and IMP-Refill's channel ticket.

Each is defined against a ticket (its per-layer or per-group counts) and tested against an
independent computation of what it claims to be.
"""

from __future__ import annotations

import math

import torch

from edgeticket.errors import UserError
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask


def random_like(ticket: Mask, seed: int, per_layer: bool = True, groups: list[ChannelGroup] | None = None) -> Mask:
    """Random pruning at the ticket's sparsity: per layer (or global); per group for channel tickets."""
    g = torch.Generator().manual_seed(seed)
    out = Mask(ticket)
    if groups:
        for grp in groups:
            n_alive = int(C.channel_alive(ticket, grp).sum())
            keep = torch.zeros(grp.channels, dtype=torch.bool)
            keep[torch.randperm(grp.channels, generator=g)[:n_alive]] = True
            for w in grp.weight_names():
                out[w] = torch.ones_like(ticket[w])
            C.set_channels(out, grp, keep)
        return out
    keys = ticket.weight_keys()
    if per_layer:
        for k in keys:
            n = int(ticket[k].sum())
            m = torch.zeros(ticket[k].numel(), dtype=torch.bool)
            m[torch.randperm(m.numel(), generator=g)[:n]] = True
            out[k] = m.view_as(ticket[k])
        return out
    sizes = [ticket[k].numel() for k in keys]
    n = sum(int(ticket[k].sum()) for k in keys)
    flat = torch.zeros(sum(sizes), dtype=torch.bool)
    flat[torch.randperm(flat.numel(), generator=g)[:n]] = True
    for k, part in zip(keys, flat.split(sizes), strict=True):
        out[k] = part.view_as(ticket[k])
    return out


def reverse_of(ticket: Mask, weights: dict[str, torch.Tensor], groups: list[ChannelGroup] | None = None) -> Mask:
    """The complement at the same sparsity: per layer (per group for channel tickets), the same
    count, taken from what the ticket pruned (largest first), then from the ticket's smallest
    survivors when the complement is too small."""
    out = Mask(ticket)

    def pick(alive: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
        n = int(alive.sum())
        # pruned ones first, by magnitude descending; then survivors by magnitude ascending
        score = torch.where(alive, -mag.double() - 1.0, mag.double() + 1.0 + mag.double().abs().max())
        return C.stable_topk_mask(score, n)

    if groups:
        for grp in groups:
            alive = C.channel_alive(ticket, grp)
            mags = C.channel_scores(weights, Mask({w: torch.ones_like(ticket[w]) for w in grp.weight_names()}), grp)
            keep = pick(alive, mags)
            for w in grp.weight_names():
                out[w] = torch.ones_like(ticket[w])
            C.set_channels(out, grp, keep)
        return out
    for k in ticket.weight_keys():
        out[k] = pick(ticket[k], weights[k].detach().abs().cpu())
    return out


def refill(ticket: Mask, weights: dict[str, torch.Tensor], groups: list[ChannelGroup], budget: float | None,
           round_to: int = 8) -> tuple[Mask, float]:
    """IMP-Refill (Chen et al., ICML 2022), group-aware: per group keep the channels with the most
    surviving weight magnitude, dense, and drop the rest.

    ``budget`` is the fraction of each group's channels to keep. By default it is
    sqrt(ticket density): parameters scale with kept outputs x kept inputs, so the channel ticket
    then holds about as many weights as the unstructured one.
    """
    density = ticket.density()
    if budget is None:
        budget = math.sqrt(density)
    if not 0 < budget <= 1:
        raise UserError(f"--budget {budget}: give a fraction of channels to keep in (0, 1].")
    out = C.with_bn_entries(Mask(ticket), groups)
    for grp in groups:
        scores = C.channel_scores(weights, ticket, grp)
        keep_n = min(grp.channels, C.round_channels(grp.channels * budget, round_to, grp.channels))
        keep = C.stable_topk_mask(scores, keep_n)
        for w in grp.weight_names():
            out[w] = torch.ones_like(ticket[w])
        C.set_channels(out, grp, keep)
    # Weights in scope outside every prunable group (coupled to a producer out of scope) cannot
    # lose channels; refill makes them dense like the kept channels.
    grouped = {w for grp in groups for w in grp.weight_names()}
    for k in out.weight_keys():
        if k not in grouped:
            out[k] = torch.ones_like(out[k])
    return out, budget
