"""Pruning criteria as a registry: which weights or channels survive a level.

A criterion is a class with a ``name``, a ``structured`` flag (it removes whole output
channels, so its tickets compact) and ``prune(weights, mask, density, ctx)``. It is registered
by name with ``@register_criterion``, as Torch-Pruning injects its importance and timm
registers its models; ``--criterion NAME`` then finds it. Adding a criterion is one module
holding the class and its registration (imported below for the built-in ones).

All criteria are deterministic for their inputs (stable sorts, seeded generators), produce
masks nested in the current one (IMP), and never prune a layer below its floor: one filter's
worth of weights (unstructured) or ``min(round_to, channels)`` channels (channel groups). A
request that cannot be met above the floors is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from edgeticket.errors import UserError
from edgeticket.tickets.criteria.common import PruneResult, with_bn_entries
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask


@dataclass
class PruneContext:
    """What a criterion may use besides the weights and the mask."""

    groups: list[ChannelGroup] = field(default_factory=list)  # prunable channel groups in scope
    round_to: int = 8  # channel counts are kept at multiples of this
    latency: object | None = None  # a tickets.budget.LatencyBudget: prune to its target_ms instead of a density


class Criterion:
    """Base class: subclasses set ``name`` (and ``structured``) and implement ``prune``."""

    name: ClassVar[str] = ""
    structured: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def initial_mask(self, mask: Mask, ctx: PruneContext) -> Mask:
        """Level 0's mask (all True). A structured criterion adds the BN entries of its groups."""
        return with_bn_entries(mask, ctx.groups) if self.structured else mask

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask, density: float, ctx: PruneContext) -> PruneResult:
        """The next mask: nested in ``mask``, keeping about ``density`` of the prunable weights."""
        raise NotImplementedError


_CRITERIA: dict[str, type[Criterion]] = {}


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: make ``cls`` available as ``--criterion cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a criterion needs a name")
    if cls.name in _CRITERIA and _CRITERIA[cls.name] is not cls:
        raise ValueError(f"criterion {cls.name!r} is registered twice")
    _CRITERIA[cls.name] = cls
    return cls


def criterion_names(structured: bool | None = None) -> tuple[str, ...]:
    """Registered names, unstructured first; only those of one kind when ``structured`` is given."""
    ordered = sorted(_CRITERIA.values(), key=lambda c: (c.structured, c.name))
    return tuple(c.name for c in ordered if structured is None or c.structured == structured)


def get_criterion(name: str) -> Criterion:
    if name not in _CRITERIA:
        raise UserError(f"--criterion {name!r}: choose one of {', '.join(criterion_names())}.")
    return _CRITERIA[name]()


# The built-in criteria register themselves on import.
from edgeticket.tickets.criteria import channel, magnitude, refill  # noqa: E402, F401

__all__ = ["Criterion", "PruneContext", "PruneResult", "criterion_names", "get_criterion", "register_criterion"]
