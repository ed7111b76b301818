"""What the criteria share: the scope, floors, stable top-k, and channel-group bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgeticket.errors import UserError
from edgeticket.tickets.config import SCOPES
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask


def prunable_names(model: nn.Module, scope: str = "all", include_conv1: bool = False) -> list[str]:
    """Conv weights in scope. BN, biases and the final head are never pruned on their own."""
    if scope not in SCOPES:
        raise UserError(f"--scope {scope!r}: choose encoder, decoder or all.")
    out, stem = [], getattr(model, "stem", "encoder.conv1")  # the model's first conv
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Conv2d):
            continue
        if name == "head" or (name == stem and not include_conv1):
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


def filter_floor(w: torch.Tensor) -> int:
    """One filter: the weights of one output channel."""
    return int(w[0].numel()) if w.dim() > 1 else 1


def stable_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest scores; ties broken by position, deterministically."""
    flat = scores.flatten()
    out = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        out[order] = True
    return out.view_as(scores)


def round_channels(n: float, round_to: int, total: int) -> int:
    """Round to a multiple of ``round_to``, never below ``min(round_to, total)``."""
    floor = min(round_to, total)
    return max(floor, int(round(n / round_to)) * round_to) if round_to > 1 else max(1, int(round(n)))


def keep_fraction(group: ChannelGroup, alive: torch.Tensor, scores: torch.Tensor, f: float, round_to: int) -> torch.Tensor:
    """A group's best ``round(channels * f)`` channels by ``scores`` (rounded to ``round_to``, at least its
    floor), never more than are ``alive``, and never a dead one."""
    ranked = torch.where(alive, scores.double(), torch.full((group.channels,), -1.0, dtype=torch.float64))
    return stable_topk_mask(ranked, min(int(alive.sum()), round_channels(group.channels * f, round_to, group.channels)))


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


def replace_channels(mask: Mask, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Make ``keep`` the group's channels, whatever ``mask`` held before: kept channels dense
    (weights and BN), the others masked."""
    for w in group.weight_names():
        mask[w] = torch.ones_like(mask[w])
    for b in group.bn_param_names():
        mask[b] = torch.ones(group.channels, dtype=torch.bool)
    set_channels(mask, group, keep)


def with_bn_entries(mask: Mask, groups: list[ChannelGroup]) -> Mask:
    """A channel ticket's mask holds the BN entries of every prunable group (all True at first)."""
    out = Mask(mask)
    for g in groups:
        for b in g.bn_param_names():
            if b not in out:
                out[b] = torch.ones(g.channels, dtype=torch.bool)
    return out


