"""Iterative magnitude pruning with rewinding: the Python API behind ``edgeticket search``.

Level 0 trains the whole model; its mask is all True. Each later level prunes a fraction of
what is still alive (judged on the previous level's final trained weights, by the registered
criterion), rewinds the survivors and retrains. Level k therefore keeps (1 - rate)^k of the
prunable weights, or for channel tickets of each group's channels (within ``round_to``).

Resumable at any point: a level is finished when its ``sparsity.json`` exists; its
``mask.pt`` is written (atomically) before its training starts, and the training itself
resumes from ``last.pt``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from edgeticket import faults, paths
from edgeticket.data.prepare import effective_input_size
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, read_json, write_json
from edgeticket.hparams import FieldError
from edgeticket.models.adapt import layer_widths
from edgeticket.models.macs import count_macs
from edgeticket.tickets.config import SearchConfig
from edgeticket.tickets.context import SearchContext
from edgeticket.tickets.criteria.common import channel_dead
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask
from edgeticket.train import distributed as D
from edgeticket.train.distill import teacher_for
from edgeticket.train.optim import batch_plan
from edgeticket.train.run import (
    DEFAULT_DEVICE,
    check_out_dir,
    open_prepared,
    refuse_out_near_data,
    setup_device,
)
from edgeticket.train.trainer import Trainer


def level_density(cfg: SearchConfig, level: int) -> float:
    density = (1 - cfg.rate) ** level
    if cfg.target_sparsity is not None:
        density = max(density, 1 - cfg.target_sparsity)
    return density


def alive_widths(model: nn.Module, mask: Mask, groups: list[ChannelGroup]) -> dict[str, tuple[int, int]]:
    """{module: (in alive, out alive)} once a mask's removable channels are gone, for MAC counting."""
    alive = layer_widths(model)
    for g in groups:
        if not all(w in mask for w in g.weight_names()):
            continue
        n = int((~channel_dead(mask, g)).sum())
        for p in g.producers + g.bns:
            alive[p][1] = n
            if p in g.bns:
                alive[p][0] = n
        for c in g.consumers:
            alive[c][0] = n
    return {k: (v[0], v[1]) for k, v in alive.items()}


# -- one level ------------------------------------------------------------------------------------

def next_mask(ctx: SearchContext, level: int) -> tuple[Mask, list[str]]:
    """Level ``level``'s mask from the previous level's final weights and mask."""
    if level == 0:
        return ctx.initial_mask(), []
    prev = paths.level_dir(ctx.root, level - 1)
    weights = load_torch(prev / paths.FINAL, what="weights")
    mask = Mask.load(prev / paths.MASK)
    faults.point("mask")
    res = ctx.criterion.prune(weights, mask, level_density(ctx.cfg, level), ctx.prune_context())
    return res.mask, res.notes


def train_masked(ctx: SearchContext, folder: Path, mask: Mask, start: dict[str, torch.Tensor], meta: dict,
                 save_rewind: bool = False) -> dict:
    """Train a masked model from ``start`` into ``folder`` (resuming a killed run), then write sparsity.json.

    ``save_rewind`` keeps the weights at the search's late-rewinding step as ``rewind.pt``.
    """
    model = ctx.training_model(start)
    mask.check_fits(model, str(folder / paths.MASK))
    mask.apply_(model)
    single = not D.current().enabled  # under DDP each level wraps afresh (no compiled module to keep)
    trainer = Trainer(model, ctx.data, copy.deepcopy(ctx.cfg.train), folder, meta=meta, mask=mask,
                      device=ctx.device, progress=ctx.progress, net=ctx.net if single else None, teacher=ctx.teacher)
    if single:
        ctx.net = trainer.net
    snapshots = {ctx.cfg.rewind.step(trainer.steps_per_epoch): folder / paths.REWIND} if save_rewind else None
    trainer.fit(resume=(folder / paths.LAST).exists(), snapshots=snapshots)
    report = sparsity_report(ctx, mask, meta)
    if D.current().is_main:
        write_json(folder / paths.SPARSITY, report)
    D.barrier()
    return report


def sparsity_report(ctx: SearchContext, mask: Mask, meta: dict) -> dict:
    rep = mask.report()
    size = tuple(ctx.cfg.data.input_size)
    macs = {"dense": count_macs(ctx.probe, size),
            "channel": count_macs(ctx.probe, size, alive_widths(ctx.probe, mask, ctx.groups))}
    return {"level": meta.get("level"), "branch": meta.get("branch", ""), "criterion": meta.get("criterion"),
            **rep, "macs": macs, "notes": meta.get("notes", [])}


def run_level(ctx: SearchContext, level: int) -> dict:
    folder = paths.level_dir(ctx.root, level)
    if (folder / paths.SPARSITY).exists():
        return read_json(folder / paths.SPARSITY)
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if (folder / paths.MASK).exists():
        mask = Mask.load(folder / paths.MASK)
    else:
        mask, notes = next_mask(ctx, level) if D.current().is_main else (None, [])
        mask, notes = D.broadcast_object((mask, notes))
        if D.current().is_main:
            mask.save(folder / paths.MASK)
    start = ctx.rewind_weights() if level > 0 else ctx.level0_weights()
    meta = ctx.meta(level=level, criterion=ctx.cfg.criterion, branch="", rewind=str(ctx.cfg.rewind),
                    density_target=level_density(ctx.cfg, level), notes=notes)
    return train_masked(ctx, folder, mask, start, meta, save_rewind=level == 0 and ctx.cfg.rewind.late)


# -- the search -------------------------------------------------------------------------------------

def search(data: str | Path, out: str | Path, config: SearchConfig | None = None, *, device: str = DEFAULT_DEVICE,
           resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or resume) an IMP search of ``config`` on ``data`` into ``out``; return the summary.

    Every setting is checked before anything is written, the rewind point included.
    """
    from edgeticket.tickets.summary import write_summary

    cfg = config or SearchConfig()
    root = Path(out)
    cfg = cfg.replace(data=cfg.data.replace(input_size=effective_input_size(data, cfg.data)))
    saved = root / paths.SEARCH
    if saved.exists() and resume:
        old = read_json(saved).get("config", {})
        diff = _changed_settings(old, cfg.to_dict())
        if old and diff:
            raise UserError(f"--resume {root}: the search was started with other settings ({', '.join(diff)}); "
                            "use the same options, or --overwrite to start over.")
    dev = setup_device(device)
    refuse_out_near_data(root, data)
    teacher = teacher_for(cfg.train, cfg.model.arch, root)  # a bad --distill is refused before anything is written
    prepared = open_prepared(data, cfg.data, progress)
    _check_rewind_step(cfg, prepared.count("train"))
    check_out_dir(root, resume, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    if D.current().is_main and not saved.exists():
        write_json(saved, {"config": cfg.to_dict(), "data": str(data), "cache": str(prepared.root)})
    ctx = SearchContext(root, cfg, prepared, dev, progress, teacher)
    for level in range(cfg.levels):
        if level > 0 and cfg.target_sparsity is not None and 1 - level_density(cfg, level - 1) >= cfg.target_sparsity - 1e-9:
            break  # the previous level reached the target (the schedule is clamped to it)
        run_level(ctx, level)
        faults.point("level")
    return write_summary(root) if D.current().is_main else {}


def _check_rewind_step(cfg: SearchConfig, n_train: int) -> None:
    if cfg.rewind.kind != "step":
        return
    _, spe = batch_plan(n_train, cfg.train, D.current().world)
    total = spe * cfg.train.epochs
    if cfg.rewind.k > total:
        raise FieldError("rewind", cfg.rewind, f"level 0 trains {cfg.train.epochs} epochs of {spe} steps "
                         f"({total} steps); choose a rewind point inside that")


def _changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Settings that differ, as dotted names; the learning rate may change on resume."""
    out = []
    for k in sorted(set(old) | set(new)):
        name = f"{prefix}{k}"
        if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            out += _changed_settings(old[k], new[k], f"{name}.")
        elif old.get(k) != new.get(k) and name not in ("train.lr", "train.compile", "train.compile_mode",
                                                        "train.eval_batch_size"):
            out.append(name)
    return out
