"""Baselines as branches of a finished search level (open_lth's ``Branch`` subclasses).

Each branch writes ``DIR/level_NN/branch_<name>/``, a level directory like any other, trained
the same way as the level it branches from. A branch is a class with a ``name``, registered
with ``@register_branch``; the built-in ones:
- ``random`` (``random_s<seed>``): random pruning at the level's sparsity (per layer, or global),
  one per seed; per group for channel tickets, so their latency compares fairly;
- ``reverse``: the inverse of one-shot magnitude pruning: the ticket's per-layer (per-group)
  counts, lowest-scored by the criterion on the dense model's trained weights;
- ``reinit``: the level's mask on a fresh random initialisation;
- ``oneshot`` (``oneshot_<S>``): one-shot pruning of level 0's trained weights to sparsity S,
  by the search's criterion;
- ``refill``: an unstructured ticket turned into a channel ticket by IMP-Refill's rule (group-aware,
  ``criteria.refill``): each group keeps int(alive / filter size) whole channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch
from edgeticket.models.registry import build_model
from edgeticket.tickets import baselines as B
from edgeticket.tickets.config import BranchConfig
from edgeticket.tickets.context import SearchContext, open_search
from edgeticket.tickets.criteria.refill import refill
from edgeticket.tickets.imp import train_masked
from edgeticket.tickets.mask import Mask
from edgeticket.train.run import DEFAULT_DEVICE

BranchMasks = list[tuple[str, Mask, dict]]  # (branch name, mask, extra meta) per branch to train


class Branch:
    """Base class: ``masks`` says what to train; ``start_weights`` where training starts."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def masks(self, ctx: SearchContext, level: int, ticket: Mask, cfg: BranchConfig) -> BranchMasks:
        raise NotImplementedError

    def start_weights(self, ctx: SearchContext, level: int) -> dict[str, torch.Tensor]:
        return ctx.rewind_weights()

    def criterion(self, ctx: SearchContext) -> str:
        """What the branch's meta.json calls its criterion."""
        return ctx.cfg.criterion


_BRANCHES: dict[str, type[Branch]] = {}


def register_branch(cls: type[Branch]) -> type[Branch]:
    if not cls.name or (cls.name in _BRANCHES and _BRANCHES[cls.name] is not cls):
        raise ValueError(f"{cls.__name__}: a branch needs a name of its own")
    _BRANCHES[cls.name] = cls
    return cls


def branch_names() -> tuple[str, ...]:
    return tuple(_BRANCHES)


def get_branch(name: str) -> Branch:
    if name not in _BRANCHES:
        raise UserError(f"branch {name!r}: choose one of {', '.join(_BRANCHES)}.")
    return _BRANCHES[name]()


def _final_weights(ctx: SearchContext, level: int) -> dict[str, torch.Tensor]:
    return load_torch(paths.level_dir(ctx.root, level) / paths.FINAL, what="weights")


@register_branch
class RandomBranch(Branch):
    name = "random"
    description = "random pruning at the ticket's per-layer (or global) counts"

    def masks(self, ctx, level, ticket, cfg):
        per_layer = not cfg.global_draw
        return [(paths.branch_name("random", s), B.random_like(ticket, 1000 + s, per_layer, ctx.ticket_groups),
                 {"seed": s, "per_layer": per_layer}) for s in range(cfg.seeds)]


@register_branch
class ReverseBranch(Branch):
    name = "reverse"
    description = "the ticket's counts, lowest-scored by the criterion on the dense model's trained weights"

    def masks(self, ctx, level, ticket, cfg):
        return [("reverse", B.reverse_of(ticket, _final_weights(ctx, 0), ctx.ticket_groups), {})]


@register_branch
class ReinitBranch(Branch):
    name = "reinit"
    description = "the ticket's mask on a fresh random initialisation"

    def masks(self, ctx, level, ticket, cfg):
        return [("reinit", ticket, {})]

    def start_weights(self, ctx, level):
        """A fresh random initialisation, seeded by the search's seed and the level."""
        torch.manual_seed(ctx.cfg.train.seed * 1000 + 17 + level)
        return build_model(ctx.cfg.model.arch).state_dict()


@register_branch
class OneshotBranch(Branch):
    name = "oneshot"
    description = "one-shot pruning of the dense trained weights to --sparsity"

    def masks(self, ctx, level, ticket, cfg):
        if cfg.sparsity is None:
            raise UserError("--sparsity: one-shot pruning needs a target sparsity in (0, 1).")
        level0 = finished_level(ctx, 0)
        w0, m0 = load_torch(level0 / paths.FINAL, what="weights"), Mask.load(level0 / paths.MASK)
        res = ctx.criterion.prune(w0, m0, 1 - cfg.sparsity, ctx.prune_context())
        return [(f"oneshot_{cfg.sparsity:.3f}", res.mask, {"oneshot_sparsity": cfg.sparsity, "notes": res.notes})]


@register_branch
class RefillBranch(Branch):
    name = "refill"
    description = "an unstructured ticket refilled into whole channels by IMP-Refill's rule"

    def masks(self, ctx, level, ticket, cfg):
        if ctx.channel:
            raise UserError(f"--level {level}: this search's tickets are already channel tickets; refill turns "
                            "unstructured ones into channels.")
        mask = refill(ticket, ctx.groups, ctx.cfg.round_to)
        return [("refill", mask, {"refill_from_sparsity": ticket.sparsity()})]

    def criterion(self, ctx):
        return "refill"


def finished_level(ctx: SearchContext, level: int) -> Path:
    folder = paths.level_dir(ctx.root, level)
    if not (folder / paths.SPARSITY).exists():
        raise UserError(f"--level {level}: {folder} is not a finished level of this search.")
    return folder


def run_branches(root: str | Path, kind: str, config: BranchConfig, *, device: str = DEFAULT_DEVICE,
                 progress: bool = True) -> list[dict]:
    """Create and train the ``kind`` branches of ``config.level`` (a finished branch is skipped;
    a killed one resumes); then rewrite the search's summary."""
    from edgeticket.runs import FolderLock

    with FolderLock(root, "SEARCH_DIR"):  # one writer: not beside a running search or another branch
        return _run_branches(root, kind, config, device, progress)


def _run_branches(root, kind: str, config: BranchConfig, device: str, progress: bool) -> list[dict]:
    from edgeticket.tickets.summary import write_summary

    branch = get_branch(kind)
    ctx = open_search(root, device, progress)
    level = config.level
    ticket = Mask.load(finished_level(ctx, level) / paths.MASK)
    results = []
    for name, mask, extra in branch.masks(ctx, level, ticket, config):
        folder = paths.branch_dir(paths.level_dir(ctx.root, level), name)
        if (folder / paths.SPARSITY).exists():
            results.append({"branch": name, "path": str(folder), "status": "already done"})
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / paths.MASK).exists():
            mask = Mask.load(folder / paths.MASK)
        else:
            mask.save(folder / paths.MASK)
        meta = ctx.meta(level=level, criterion=branch.criterion(ctx), branch=name, rewind=str(ctx.cfg.rewind),
                        notes=extra.pop("notes", []), **extra)
        report = train_masked(ctx, folder, mask, branch.start_weights(ctx, level), meta)
        results.append({"branch": name, "path": str(folder), "status": "trained", "sparsity": report["total"]["sparsity"]})
    write_summary(ctx.root)
    return results
