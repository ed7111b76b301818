"""Baselines as branches of a finished search level (open_lth's idea).

Each branch writes ``DIR/level_NN/branch_<name>/``, a level directory like any other, trained
the same way as the level it branches from:
- ``random_s<seed>``: random pruning at the level's sparsity (per layer, or global), one per seed;
- ``reverse``: the complement at the same sparsity;
- ``reinit``: the level's mask on a fresh random initialisation;
- ``oneshot_<S>``: one-shot magnitude pruning of level 0's trained weights to sparsity S;
- ``refill``: an unstructured ticket turned into a channel ticket (IMP-Refill, group-aware).
Channel tickets get channel baselines (random and reverse channels per group), so their
latency compares fairly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeticket import paths
from edgeticket.data.dataset import PreparedData
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, read_json
from edgeticket.models.registry import build_model
from edgeticket.tickets import criteria as C
from edgeticket.tickets.imp import SearchConfig, SearchContext, train_masked
from edgeticket.tickets.mask import Mask
from edgeticket.train.trainer import resolve_device

BRANCHES = ("random", "reverse", "reinit", "oneshot", "refill")


def open_search(root: str | Path, device: str | None = "cpu", progress: bool = True) -> SearchContext:
    root = Path(root)
    saved = root / paths.SEARCH
    if not saved.exists():
        raise UserError(f"{root}: no {paths.SEARCH}; pass the --out folder of an `edgeticket search`.")
    info = read_json(saved)
    cfg = SearchConfig.from_json(info["config"])
    cache = Path(info.get("cache", ""))
    if not (cache / "cache.json").exists():
        raise UserError(f"{saved}: its data cache {cache} is gone; rerun the search's data preparation.")
    return SearchContext(root, cfg, PreparedData(cache), resolve_device(device), progress)


def finished_level(ctx: SearchContext, level: int) -> Path:
    folder = paths.level_dir(ctx.root, level)
    if not (folder / paths.SPARSITY).exists():
        raise UserError(f"--level {level}: {folder} is not a finished level of this search.")
    return folder


def branch_masks(ctx: SearchContext, level: int, kind: str, *, seeds: int = 3, per_layer: bool = True,
                 sparsity: float | None = None, budget: float | None = None) -> list[tuple[str, Mask, dict]]:
    """(branch name, mask, extra meta) for each branch to run."""
    if kind not in BRANCHES:
        raise UserError(f"branch {kind!r}: choose one of {', '.join(BRANCHES)}.")
    folder = finished_level(ctx, level)
    ticket = Mask.load(folder / paths.MASK)
    groups = ctx.groups if ctx.channel else None
    if kind == "random":
        if seeds < 1:
            raise UserError(f"--seeds {seeds}: give at least 1.")
        return [(f"random_s{s}", C.random_like(ticket, 1000 + s, per_layer, groups), {"seed": s, "per_layer": per_layer})
                for s in range(seeds)]
    if kind == "reverse":
        return [("reverse", C.reverse_of(ticket, load_torch(folder / paths.FINAL, what="weights"), groups), {})]
    if kind == "reinit":
        return [("reinit", ticket, {})]
    if kind == "oneshot":
        if sparsity is None or not 0 < sparsity < 1:
            raise UserError(f"--sparsity {sparsity}: one-shot pruning needs a sparsity in (0, 1).")
        level0 = finished_level(ctx, 0)
        w0, m0 = load_torch(level0 / paths.FINAL, what="weights"), Mask.load(level0 / paths.MASK)
        if ctx.cfg.criterion == "magnitude-global":
            res = C.magnitude_global(w0, m0, 1 - sparsity)
        elif ctx.cfg.criterion == "magnitude-layerwise":
            res = C.magnitude_layerwise(w0, m0, 1 - sparsity)
        else:
            res = C.prune_channels(w0, m0, ctx.groups, 1 - sparsity, ctx.cfg.round_to)
        return [(f"oneshot_{sparsity:.3f}", res.mask, {"oneshot_sparsity": sparsity, "notes": res.notes})]
    if ctx.channel:
        raise UserError(f"--level {level}: this search's tickets are already channel tickets; refill turns unstructured ones into channels.")
    mask, used = C.refill(ticket, load_torch(folder / paths.FINAL, what="weights"), ctx.groups, budget, ctx.cfg.round_to)
    return [("refill", mask, {"refill_budget": used, "refill_from_sparsity": ticket.sparsity()})]


def run_branches(root: str | Path, level: int, kind: str, *, seeds: int = 3, per_layer: bool = True,
                 sparsity: float | None = None, budget: float | None = None, device: str | None = "cpu",
                 progress: bool = True) -> list[dict]:
    """Create and train the branches (a finished branch is skipped; a killed one resumes)."""
    ctx = open_search(root, device, progress)
    results = []
    for name, mask, extra in branch_masks(ctx, level, kind, seeds=seeds, per_layer=per_layer, sparsity=sparsity,
                                          budget=budget):
        folder = paths.branch_dir(paths.level_dir(ctx.root, level), name)
        if (folder / paths.SPARSITY).exists():
            results.append({"branch": name, "path": str(folder), "status": "already done"})
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / paths.MASK).exists():
            mask = Mask.load(folder / paths.MASK)
        else:
            mask.save(folder / paths.MASK)
        start = reinit_weights(ctx, level) if kind == "reinit" else ctx.rewind_weights()
        criterion = "channel" if (kind == "refill" or ctx.channel) else ctx.cfg.criterion
        meta = ctx.meta(level=level, criterion=criterion, branch=name, rewind=ctx.cfg.rewind,
                        notes=extra.pop("notes", []), **extra)
        report = train_masked(ctx, folder, mask, start, meta)
        results.append({"branch": name, "path": str(folder), "status": "trained", "sparsity": report["total"]["sparsity"]})
    from edgeticket.tickets.summary import write_summary

    write_summary(ctx.root)
    return results


def reinit_weights(ctx: SearchContext, level: int) -> dict[str, torch.Tensor]:
    """A fresh random initialisation, seeded by the search's seed and the level."""
    torch.manual_seed(ctx.cfg.train.seed * 1000 + 17 + level)
    return build_model(ctx.cfg.arch).state_dict()
