"""The masks of the controls: random pruning and the reverse mask (IMP-Refill is ``criteria.refill``).

Each is defined against a ticket (its per-layer or per-group counts) and tested against an
independent computation of what it claims to be.
"""

from __future__ import annotations

import torch

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
            C.replace_channels(out, grp, keep)
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


def reverse_of(ticket: Mask, dense: dict[str, torch.Tensor], groups: list[ChannelGroup] | None = None) -> Mask:
    """The inverse of one-shot magnitude pruning at the ticket's counts.

    Per layer (per group for channel tickets) as many weights (channels) as the ticket keeps,
    those that the criterion scores lowest on ``dense``, the dense model's trained weights
    (``level_00/final.pt``): |w| for unstructured tickets, the channel's L1 norm over the group's
    producers for channel tickets. Ties are broken by index (the lower index is kept first).
    """
    out = Mask(ticket)
    if groups:
        for grp in groups:
            n = int(C.channel_alive(ticket, grp).sum())
            full = Mask({w: torch.ones_like(ticket[w]) for w in grp.weight_names()})
            keep = C.stable_topk_mask(-C.channel_scores(dense, full, grp), n)
            C.replace_channels(out, grp, keep)
        return out
    for k in ticket.weight_keys():
        out[k] = C.stable_topk_mask(-dense[k].detach().abs().double().cpu(), int(ticket[k].sum()))
    return out
