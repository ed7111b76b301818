"""Pruning criteria: which weights or channels survive.

All criteria are deterministic for their inputs (stable sorts, seeded generators), produce
masks nested in the current one where that is the point (IMP), and never prune a layer
below its floor: one filter's worth of weights (unstructured) or ``min(round_to, channels)``
channels (channel groups). A request that cannot be met above the floors is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeticket.errors import UserError
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask

CRITERIA = ("magnitude-global", "magnitude-layerwise", "channel")


def check_criterion(name: str) -> str:
    if name not in CRITERIA:
        raise UserError(f"--criterion {name!r}: choose one of {', '.join(CRITERIA)}.")
    return name


def prunable_names(model: nn.Module, scope: str = "all", include_conv1: bool = False) -> list[str]:
    """Conv weights in scope. BN, biases and the final head are never pruned on their own."""
    if scope not in ("encoder", "decoder", "all"):
        raise UserError(f"--scope {scope!r}: choose encoder, decoder or all.")
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Conv2d):
            continue
        if name == "head" or (name == "encoder.conv1" and not include_conv1):
            continue
        part = name.split(".", 1)[0]
        if scope == "all" and part in ("encoder", "decoder") or part == scope:
            out.append(f"{name}.weight")
    return out


@dataclass
class PruneResult:
    mask: Mask
    notes: list[str] = field(default_factory=list)


def target_keep(total: int, density: float) -> int:
    return int(round(total * density))


def _floor(w: torch.Tensor) -> int:
    """One filter: the weights of one output channel."""
    return int(w[0].numel()) if w.dim() > 1 else 1


def _stable_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest scores; ties broken by position, deterministically."""
    flat = scores.flatten()
    out = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        out[order] = True
    return out.view_as(scores)


def magnitude_global(weights: dict[str, torch.Tensor], mask: Mask, density: float) -> PruneResult:
    """One threshold over all prunable weights (Chen et al.), above per-layer floors."""
    keys = mask.weight_keys()
    total = sum(mask[k].numel() for k in keys)
    alive_total = sum(int(mask[k].sum()) for k in keys)
    n_keep = min(target_keep(total, density), alive_total)
    floors = {k: min(int(mask[k].sum()), _floor(mask[k])) for k in keys}
    if sum(floors.values()) > n_keep:
        raise UserError(
            f"pruning to density {density:.4f} would leave some layers below one filter of weights; "
            "the search refuses to collapse layers: stop at a lower sparsity (--levels / --target-sparsity)."
        )
    scores = {k: torch.where(mask[k], weights[k].detach().abs().float().cpu(), torch.full_like(mask[k], -1.0, dtype=torch.float32)) for k in keys}
    reserved = {k: _stable_topk_mask(scores[k], floors[k]) for k in keys}
    rest = n_keep - sum(floors.values())
    flat = torch.cat([torch.where(reserved[k], torch.full_like(scores[k], -1.0), scores[k]).flatten() for k in keys])
    chosen = _stable_topk_mask(flat, rest)
    out, notes, off = Mask(mask), [], 0
    for k in keys:
        n = scores[k].numel()
        m = chosen[off:off + n].view_as(scores[k]) | reserved[k]
        if int(chosen[off:off + n].sum()) == 0 and floors[k] > 0 and int(mask[k].sum()) > floors[k]:
            notes.append(f"{k}: held at its floor of {floors[k]} weights (one filter) to avoid layer collapse")
        out[k] = m & mask[k]
        off += n
    return PruneResult(out, notes)


def magnitude_layerwise(weights: dict[str, torch.Tensor], mask: Mask, density: float) -> PruneResult:
    """The same fraction in each layer."""
    out, notes = Mask(mask), []
    for k in mask.weight_keys():
        alive = int(mask[k].sum())
        floor = min(alive, _floor(mask[k]))
        keep = min(alive, target_keep(mask[k].numel(), density))
        if keep < floor:
            notes.append(f"{k}: held at its floor of {floor} weights (one filter) to avoid layer collapse")
            keep = floor
        scores = torch.where(mask[k], weights[k].detach().abs().float().cpu(), torch.full_like(mask[k], -1.0, dtype=torch.float32))
        out[k] = _stable_topk_mask(scores, keep) & mask[k]
    return PruneResult(out, notes)


def round_channels(n: float, round_to: int, total: int) -> int:
    """Round to a multiple of ``round_to``, never below ``min(round_to, total)``."""
    floor = min(round_to, total)
    return max(floor, int(round(n / round_to)) * round_to) if round_to > 1 else max(1, int(round(n)))


def channel_alive(mask: Mask, group: ChannelGroup) -> torch.Tensor:
    """A channel is alive when any producer keeps any weight of it."""
    alive = torch.zeros(group.channels, dtype=torch.bool)
    for w in group.weight_names():
        alive |= mask[w].flatten(1).any(dim=1)
    return alive


def channel_dead(mask: Mask, group: ChannelGroup) -> torch.Tensor:
    """Channels that are exactly zero: every producer's weights and every BN's weight and bias masked.

    Without its BN entries (an unstructured ticket) a channel is never dead: BN's bias keeps it
    alive even when all of its weights are pruned.
    """
    if not all(b in mask for b in group.bn_param_names()):
        return torch.zeros(group.channels, dtype=torch.bool)
    dead = ~channel_alive(mask, group)
    for b in group.bn_param_names():
        dead &= ~mask[b]
    return dead


def channel_scores(weights: dict[str, torch.Tensor], mask: Mask, group: ChannelGroup) -> torch.Tensor:
    """L1 norm of the masked weights of each output channel, summed over the group's producers."""
    s = torch.zeros(group.channels, dtype=torch.float64)
    for w in group.weight_names():
        s += (weights[w].detach().cpu().double() * mask[w].double()).abs().flatten(1).sum(dim=1)
    return s


def set_channels(mask: Mask, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Mask whole output channels of every producer, and the BN weight and bias behind them."""
    for w in group.weight_names():
        m = mask[w].clone()
        m[~keep] = False
        mask[w] = m
    for b in group.bn_param_names():
        base = mask[b].clone() if b in mask else torch.ones(group.channels, dtype=torch.bool)
        base[~keep] = False
        mask[b] = base


def with_bn_entries(mask: Mask, groups: list[ChannelGroup]) -> Mask:
    """A channel ticket's mask holds the BN entries of every prunable group (all True at first)."""
    out = Mask(mask)
    for g in groups:
        for b in g.bn_param_names():
            if b not in out:
                out[b] = torch.ones(g.channels, dtype=torch.bool)
    return out


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
        keep = _stable_topk_mask(scores, keep_n)
        set_channels(out, g, keep)
    return PruneResult(out, notes)


# -- baselines --------------------------------------------------------------------------------

def random_like(ticket: Mask, seed: int, per_layer: bool = True, groups: list[ChannelGroup] | None = None) -> Mask:
    """Random pruning at the ticket's sparsity: per layer (or global); per group for channel tickets."""
    g = torch.Generator().manual_seed(seed)
    out = Mask(ticket)
    if groups:
        for grp in groups:
            n_alive = int(channel_alive(ticket, grp).sum())
            keep = torch.zeros(grp.channels, dtype=torch.bool)
            keep[torch.randperm(grp.channels, generator=g)[:n_alive]] = True
            for w in grp.weight_names():
                out[w] = torch.ones_like(ticket[w])
            set_channels(out, grp, keep)
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
        return _stable_topk_mask(score, n)

    if groups:
        for grp in groups:
            alive = channel_alive(ticket, grp)
            mags = channel_scores(weights, Mask({w: torch.ones_like(ticket[w]) for w in grp.weight_names()}), grp)
            keep = pick(alive, mags)
            for w in grp.weight_names():
                out[w] = torch.ones_like(ticket[w])
            set_channels(out, grp, keep)
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
    out = with_bn_entries(Mask(ticket), groups)
    for grp in groups:
        scores = channel_scores(weights, ticket, grp)
        keep_n = min(grp.channels, round_channels(grp.channels * budget, round_to, grp.channels))
        keep = _stable_topk_mask(scores, keep_n)
        for w in grp.weight_names():
            out[w] = torch.ones_like(ticket[w])
        set_channels(out, grp, keep)
    # Weights in scope outside every prunable group (coupled to a producer out of scope) cannot
    # lose channels; refill makes them dense like the kept channels.
    grouped = {w for grp in groups for w in grp.weight_names()}
    for k in out.weight_keys():
        if k not in grouped:
            out[k] = torch.ones_like(out[k])
    return out, budget
