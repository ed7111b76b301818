"""Unstructured magnitude pruning: global (one threshold, Chen et al.) and layer-wise."""

from __future__ import annotations

import torch

from edgeticket.errors import UserError
from edgeticket.tickets.criteria import Criterion, PruneContext, register_criterion
from edgeticket.tickets.criteria.common import (
    PruneResult,
    filter_floor,
    stable_topk_mask,
    target_keep,
)
from edgeticket.tickets.mask import Mask


def magnitude_global(weights: dict[str, torch.Tensor], mask: Mask, density: float) -> PruneResult:
    """One threshold over all prunable weights (Chen et al.), above per-layer floors."""
    keys = mask.weight_keys()
    total = sum(mask[k].numel() for k in keys)
    alive_total = sum(int(mask[k].sum()) for k in keys)
    n_keep = min(target_keep(total, density), alive_total)
    floors = {k: min(int(mask[k].sum()), filter_floor(mask[k])) for k in keys}
    if sum(floors.values()) > n_keep:
        raise UserError(
            f"pruning to density {density:.4f} would leave some layers below one filter of weights; "
            "the search refuses to collapse layers: stop at a lower sparsity (--levels / --target-sparsity)."
        )
    scores = {k: torch.where(mask[k], weights[k].detach().abs().float().cpu(), torch.full_like(mask[k], -1.0, dtype=torch.float32)) for k in keys}
    reserved = {k: stable_topk_mask(scores[k], floors[k]) for k in keys}
    rest = n_keep - sum(floors.values())
    flat = torch.cat([torch.where(reserved[k], torch.full_like(scores[k], -1.0), scores[k]).flatten() for k in keys])
    chosen = stable_topk_mask(flat, rest)
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
        floor = min(alive, filter_floor(mask[k]))
        keep = min(alive, target_keep(mask[k].numel(), density))
        if keep < floor:
            notes.append(f"{k}: held at its floor of {floor} weights (one filter) to avoid layer collapse")
            keep = floor
        scores = torch.where(mask[k], weights[k].detach().abs().float().cpu(), torch.full_like(mask[k], -1.0, dtype=torch.float32))
        out[k] = stable_topk_mask(scores, keep) & mask[k]
    return PruneResult(out, notes)


class _Magnitude(Criterion):
    """Unstructured: ``rule(weights, mask, density)`` keeps the largest |w|."""

    rule = staticmethod(magnitude_global)

    def prune(self, weights, mask: Mask, density: float, ctx: PruneContext) -> PruneResult:
        return self.rule(weights, mask, density)


@register_criterion
class MagnitudeGlobal(_Magnitude):
    name = "magnitude-global"
    description = "unstructured; one |w| threshold over all prunable layers (Chen et al.)"


@register_criterion
class MagnitudeLayerwise(_Magnitude):
    name = "magnitude-layerwise"
    description = "unstructured; the same fraction of every layer by |w|"
    rule = staticmethod(magnitude_layerwise)
