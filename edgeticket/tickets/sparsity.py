"""Effective sparsity: the fraction of the prunable weights a ticket really removes.

A weight counts as pruned when its mask entry is False, or when it lies in an input or an
output channel that is dead in the network: every producer of the channel has it masked and
so has every BatchNorm behind it (``criteria.common.channel_dead``), which is what compaction
removes. A channel ticket's masked output channel therefore also takes the consumers'
input-channel weights with it. An unstructured ticket has no dead channels (BN's bias keeps a
channel alive), so its effective sparsity is its mask's.

This is the one sparsity figure of the project: ``sparsity.json``, the summaries, the plots,
``tickets show``, the ONNX metadata and the bench use it. The mask's own zeros are
``mask_sparsity``.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeticket.tickets.criteria.common import channel_dead
from edgeticket.tickets.groups import ChannelGroup, channel_groups, prunable_groups
from edgeticket.tickets.mask import Mask


def mask_groups(mask: Mask, model: nn.Module | None = None, groups: list[ChannelGroup] | None = None) -> list[ChannelGroup]:
    """The groups whose channels ``mask`` can kill; none for an unstructured mask (no graph is built)."""
    if not mask.is_channel_ticket:
        return []
    if groups is None:
        if model is None:
            raise ValueError("a channel ticket's effective sparsity needs its model or its channel groups")
        groups = channel_groups(model)
    return prunable_groups(groups, set(mask.weight_keys()))


def dead_io(mask: Mask, groups: list[ChannelGroup]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """({conv: dead output channels}, {conv: dead input channels}) of the convs in ``groups``."""
    out_dead: dict[str, torch.Tensor] = {}
    in_dead: dict[str, torch.Tensor] = {}
    for g in groups:
        dead = channel_dead(mask, g)
        if not dead.any():
            continue
        for p in g.producers:
            out_dead[p] = out_dead.get(p, torch.zeros_like(dead)) | dead
        for c in g.consumers:
            in_dead[c] = in_dead.get(c, torch.zeros_like(dead)) | dead
    return out_dead, in_dead


def effective_masks(mask: Mask, model: nn.Module | None = None, groups: list[ChannelGroup] | None = None) -> dict[str, torch.Tensor]:
    """{weight: bool tensor} of the weights that survive compaction (mask and live channels)."""
    out_dead, in_dead = dead_io(mask, mask_groups(mask, model, groups))
    eff = {}
    for k in mask.weight_keys():
        m = mask[k]
        module = k.rsplit(".", 1)[0]
        if module in out_dead:
            m = m & ~out_dead[module].view(-1, *([1] * (m.dim() - 1)))
        if module in in_dead and m.dim() > 1 and m.shape[1] == in_dead[module].numel():
            m = m & ~in_dead[module].view(1, -1, *([1] * (m.dim() - 2)))
        eff[k] = m
    return eff


def sparsity_report(mask: Mask, model: nn.Module | None = None, groups: list[ChannelGroup] | None = None) -> dict:
    """Per layer and total: ``sparsity`` (effective), ``mask_sparsity`` and ``channel_sparsity``
    (the fraction of output channels that are dead in the network, which compaction removes)."""
    grps = mask_groups(mask, model, groups)
    eff = effective_masks(mask, groups=grps)
    out_dead, _ = dead_io(mask, grps)
    layers = {}
    for k, e in eff.items():
        v = mask[k]
        n, alive, mask_alive = int(v.numel()), int(e.sum()), int(v.sum())
        channels = int(v.shape[0])
        dead_out = int(out_dead[k.rsplit(".", 1)[0]].sum()) if k.rsplit(".", 1)[0] in out_dead else 0
        layers[k] = {
            "shape": list(v.shape), "weights": n, "alive": alive, "mask_alive": mask_alive,
            "sparsity": 1.0 - alive / n, "mask_sparsity": 1.0 - mask_alive / n,
            "channels": channels, "channels_alive": channels - dead_out, "channel_sparsity": dead_out / channels,
        }

    def total(key: str) -> int:
        return sum(r[key] for r in layers.values())

    w, c = total("weights"), total("channels")
    return {
        "total": {
            "weights": w, "alive": total("alive"), "mask_alive": total("mask_alive"),
            "sparsity": 1.0 - total("alive") / w if w else 0.0,
            "mask_sparsity": 1.0 - total("mask_alive") / w if w else 0.0,
            "channels": c, "channels_alive": total("channels_alive"),
            "channel_sparsity": 1.0 - total("channels_alive") / c if c else 0.0,
        },
        "layers": layers,
    }


def effective_sparsity(mask: Mask, model: nn.Module | None = None, groups: list[ChannelGroup] | None = None) -> float:
    """The fraction of ``mask``'s prunable weights that are masked or in a dead channel."""
    eff = effective_masks(mask, model, groups)
    total = sum(v.numel() for v in eff.values())
    return 1.0 - sum(int(v.sum()) for v in eff.values()) / total if total else 0.0


def model_for_mask(mask: Mask, arch: str | None = None) -> nn.Module | None:
    """A model the mask fits: ``arch`` when given, else the first registered one whose shapes fit."""
    from edgeticket.errors import UserError
    from edgeticket.models.registry import build_model, list_models

    for name in [arch] if arch else list_models():
        model = build_model(name)
        try:
            mask.check_fits(model)
        except UserError:
            continue
        return model
    return None


def ticket_report(mask: Mask) -> dict:
    """``sparsity_report`` of a mask on its own: a channel ticket's model is the arch of the
    meta.json beside its file, else the first registered model its shapes fit."""
    from pathlib import Path

    from edgeticket import paths
    from edgeticket.errors import UserError
    from edgeticket.fsio import read_json

    if not mask.is_channel_ticket:
        return sparsity_report(mask)
    meta = Path(mask.source).parent / paths.META
    arch = read_json(meta).get("arch") if meta.is_file() else None
    model = model_for_mask(mask, arch)
    if model is None:
        raise UserError(f"{mask.source}: fits none of the registered models, so its dead channels cannot be found.")
    return sparsity_report(mask, model)
