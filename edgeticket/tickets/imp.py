"""Iterative magnitude pruning with rewinding: the Python API behind ``edgeticket search``.

Level 0 trains the whole model; its mask is all True. Each later level prunes a fraction of
what is still alive (judged on the previous level's final trained weights, by the registered
criterion), rewinds the survivors and retrains. Level k therefore keeps (1 - rate)^k of the
prunable weights, counted as compaction counts them (effective sparsity, ``tickets.sparsity``),
for every criterion (within the rounding of channel widths).

Resumable at any point: a level is finished when its ``sparsity.json`` exists; its
``mask.pt`` is written (atomically) before its training starts, and the training itself
resumes from ``last.pt``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeticket import faults, paths
from edgeticket.data.prepare import effective_input_size
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, read_json, write_json
from edgeticket.hparams import FieldError
from edgeticket.models.adapt import layer_widths
from edgeticket.models.macs import count_macs
from edgeticket.runs import identity_of, write_marker
from edgeticket.tickets.budget import LatencyBudget, floor_widths
from edgeticket.tickets.config import SearchConfig
from edgeticket.tickets.context import SearchContext
from edgeticket.tickets.criteria.common import channel_dead
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask
from edgeticket.tickets.sparsity import sparsity_report as effective_report
from edgeticket.train import distributed as D
from edgeticket.train.distill import teacher_for
from edgeticket.train.optim import batch_plan
from edgeticket.train.run import (
    DEFAULT_DEVICE,
    claim_out,
    data_identity,
    open_prepared,
    refuse_out_near_data,
    setup_device,
    train_identity,
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
    for name, mod in model.named_modules():  # a depthwise conv's input channels are its output channels
        if isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels:
            alive[name][0] = alive[name][1]
    return {k: (v[0], v[1]) for k, v in alive.items()}


# -- one level ------------------------------------------------------------------------------------

def next_mask(ctx: SearchContext, level: int) -> tuple[Mask, list[str], dict | None]:
    """Level ``level``'s mask from the previous level's final weights and mask, its notes, and a budgeted
    level's latency check (``check_level``; None when not measured)."""
    if level == 0:
        return ctx.initial_mask(), [], None
    prev = paths.level_dir(ctx.root, level - 1)
    weights = load_torch(prev / paths.FINAL, what="weights")
    mask = Mask.load(prev / paths.MASK)
    faults.point("mask")
    pctx = ctx.prune_context()
    if ctx.budget is not None:
        ctx.budget.target_ms = level_target_ms(ctx, mask)
        pctx.latency = ctx.budget
    def prune():  # with the budget's current target_ms
        return ctx.criterion.prune(weights, mask, level_density(ctx.cfg, level), pctx)

    res = prune()
    if ctx.budget is None or not ctx.cfg.check_latency:
        return res.mask, res.notes, None
    return check_level(ctx, res, prune)


def train_masked(ctx: SearchContext, folder: Path, mask: Mask, start: dict[str, torch.Tensor], meta: dict,
                 level0: bool = False) -> dict:
    """Train a masked model from ``start`` into ``folder`` (resuming a killed run), then write sparsity.json.

    Level 0 (``level0``) trains the whole schedule and keeps the weights at the search's late
    rewinding step K as ``rewind.pt``. Every other level and branch starts from the rewind point
    at step K, with the data order, warm-up and learning-rate schedule advanced to K, and trains
    the remaining steps (open_lth's ``start_step``), so that it ends at level 0's total step
    count; ``pretrained`` and ``init`` are K = 0.
    """
    mark_level(ctx, folder, meta.get("level"), meta.get("branch", ""))
    model = ctx.training_model(start)
    mask.check_fits(model, str(folder / paths.MASK))
    mask.apply_(model)
    single = not D.current().enabled  # under DDP each level wraps afresh (no compiled module to keep)
    trainer = Trainer(model, ctx.data, copy.deepcopy(ctx.cfg.train), folder, meta=meta, mask=mask,
                      device=ctx.device, progress=ctx.progress, net=ctx.net if single else None, teacher=ctx.teacher)
    if single:
        ctx.net = trainer.net
    k = ctx.cfg.rewind.step(trainer.steps_per_epoch)
    snapshots = {k: folder / paths.REWIND} if level0 and ctx.cfg.rewind.late else None
    trainer.fit(resume=(folder / paths.LAST).exists(), snapshots=snapshots, start_step=0 if level0 else k)
    report = sparsity_report(ctx, mask, meta, folder)
    if D.current().is_main:
        write_json(folder / paths.SPARSITY, report)
    D.barrier()
    return report


def mark_level(ctx: SearchContext, folder: Path, level: int | None, branch: str = "") -> None:
    """A level or branch folder says what it is, before anything else is written into it."""
    if D.current().is_main and not (folder / paths.RUN_MARKER).exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_marker(folder, "branch" if branch else "level",
                     {"search": identity_of(search_identity(ctx.cfg, ctx.data)), "level": level, "branch": branch})


def sparsity_report(ctx: SearchContext, mask: Mask, meta: dict, folder: Path | None = None) -> dict:
    """sparsity.json: effective, mask and channel sparsity per layer and in total, and the MACs."""
    rep = effective_report(mask, groups=ctx.groups if mask.is_channel_ticket else [])
    size = tuple(ctx.cfg.data.input_size)
    macs = {"dense": count_macs(ctx.probe, size),
            "channel": count_macs(ctx.probe, size, alive_widths(ctx.probe, mask, ctx.groups))}
    out = {"level": meta.get("level"), "branch": meta.get("branch", ""), "criterion": meta.get("criterion"),
           **rep, "macs": macs, "notes": meta.get("notes", [])}
    if ctx.budget is not None:
        out.update(latency_figures(ctx, mask, folder))
    return out


# -- latency budgets (tickets/budget.py) -----------------------------------------------------------

def final_target_ms(ctx: SearchContext, budget: LatencyBudget | None = None) -> float:
    cfg, lm = ctx.cfg, (budget or ctx.budget).model
    return cfg.target_latency if cfg.target_latency is not None else lm.dense_ms / cfg.target_speedup


def level_target_ms(ctx: SearchContext, prev_mask: Mask) -> float:
    """(1 - rate) of the previous level's predicted latency, never below the final target."""
    return max(final_target_ms(ctx), (1 - ctx.cfg.rate) * ctx.budget.predict(prev_mask))


def within(ms: float, target_ms: float) -> bool:
    """``ms`` meets ``target_ms``, to float rounding."""
    return ms <= target_ms * (1 + 1e-9)


def latency_figures(ctx: SearchContext, mask: Mask, folder: Path | None = None) -> dict:
    pred, lm = ctx.budget.predict(mask), ctx.budget.model
    out = {"predicted_latency_ms": pred, "predicted_speedup": lm.dense_ms / pred if pred > 0 else None,
           "target_latency_ms": final_target_ms(ctx), "allocation": ctx.budget.allocation,
           "latency_model": lm.provenance}
    if folder is not None and (folder / paths.LATENCY_CHECK).exists():
        out["latency_check"] = read_json(folder / paths.LATENCY_CHECK)
    return out


CHECK_TRIES = 3  # measurements of one level, the first included
CHECK_MARGIN = 0.02  # a corrected level aims this far past the target, so that the next measurement's noise does not undo it


def corrected_target_ms(final: float, attempts: list[dict]) -> float:
    """The predicted latency a checked level is pruned again to: ``final`` over the measured / predicted
    ratio of all its attempts (their log ratios averaged, each weighted by its own squared standard
    error, so that one noisy measurement does not throw the level far past the target), less
    ``CHECK_MARGIN``. A level short of the target is pruned at least ``CHECK_MARGIN`` further than its
    last prediction; one clearly faster than needed (``clearly_fast``) gives channels back, at
    least ``CHECK_MARGIN`` of its last prediction.

    (Correcting by the last attempt alone, a 4x search measured 3.81x, then 3.27x [2.96, 3.61] on a
    noisy machine, and was pruned again to a ticket measured at 6.89x; BENCHMARKS.md.)"""
    from edgeticket.bench.latency_model import SE_FLOOR

    logs = np.array([np.log(a["measured_latency_ms"] / a["predicted_latency_ms"]) for a in attempts])
    w = np.array([1.0 / max(a["se"], SE_FLOOR) ** 2 for a in attempts])
    ratio = float(np.exp(np.sum(w * logs) / np.sum(w)))
    aim, last = final / ratio * (1 - CHECK_MARGIN), attempts[-1]["predicted_latency_ms"]
    if attempts[-1]["met"]:
        return max(aim, last * (1 + CHECK_MARGIN))
    return min(aim, last * (1 - CHECK_MARGIN))


def clearly_fast(final: float, attempt: dict) -> bool:
    """Faster than the target by more than twice ``CHECK_MARGIN`` even at the slow end of its 95% interval."""
    return attempt["measured_latency_ms"] * float(np.exp(1.96 * attempt["se"])) < final * (1 - 2 * CHECK_MARGIN)


def check_level(ctx: SearchContext, res, prune_again) -> tuple[Mask, list[str], dict | None]:
    """Measure the level predicted to meet the final target beside the dense model and, while it
    is short of the target (or clearly faster than it), prune it again to a prediction corrected by
    what was measured.

    NetAdapt measures every proposal; a table predicts them, and on some machines its errors lean
    one way for the tickets the allocation prefers (BENCHMARKS.md: budgeted tickets measured 9-21%
    slower than predicted on an AMD EPYC at 96x128). So the level that would end the search is
    timed as the bench times it (``bench.latency_model.measure_beside_dense``). Its measured
    latency is the measured ratio to the dense model times the model's dense latency for
    ``--target-speedup``, its own p50 for ``--target-latency``. If it misses the target, or beats
    it beyond noise by more than ``2 * CHECK_MARGIN`` (channels the budget could have kept), the
    level's predicted target is corrected by the measured / predicted ratio, as if the error were
    proportional (``corrected_target_ms``: pooled over the level's attempts, each weighted by its
    noise), and the same previous-level mask and weights are pruned to it again; at most
    ``CHECK_TRIES`` measurements. The level keeps the widest attempt that met the target (the last
    one if none did). Levels predicted above the target are not measured.
    Returns the mask, the level's notes and the check (written beside the mask as ``latency_check.json``).
    """
    from edgeticket.bench.latency_model import measure_beside_dense

    budget, final, dense = ctx.budget, final_target_ms(ctx), ctx.budget.model.dense_ms
    notes, attempts, masks = list(res.notes), [], []
    for attempt in range(CHECK_TRIES):
        pred = budget.predict(res.mask)
        if not within(pred, final) and not attempts:
            break  # not the level that ends the search (or every group is at its floor): nothing to check
        if ctx.progress:
            print(f"  latency check {attempt + 1}/{CHECK_TRIES}: timing the level beside the dense model", flush=True)
        m = measure_beside_dense(ctx.probe, tuple(ctx.cfg.data.input_size), budget.widths(res.mask), budget.timing)
        measured = m["ticket_p50_ms"] if ctx.cfg.target_latency is not None else dense / m["speedup"]
        attempts.append({**m, "predicted_latency_ms": pred, "predicted_speedup": dense / pred,
                         "measured_latency_ms": measured, "met": within(measured, final)})
        masks.append(res.mask)
        said = (f"latency check: predicted {dense / pred:.2f}x ({pred:.2f} ms), measured "
                f"{m['speedup']:.2f}x [{m['speedup_ci'][0]:.2f}, {m['speedup_ci'][1]:.2f}] beside the dense model "
                f"({m['ticket_p50_ms']:.2f} against {m['dense_p50_ms']:.2f} ms)")
        met, fast = attempts[-1]["met"], clearly_fast(final, attempts[-1])
        if met and not fast:
            notes.append(said + ": meets the target")
            break
        if attempt == CHECK_TRIES - 1:
            notes.append(said + (": faster than needed" if met else ": short of the target")
                         + f" after {CHECK_TRIES} measurements")
            break
        budget.target_ms = corrected_target_ms(final, attempts)
        notes.append(said + (": faster than needed beyond noise; channels given back to" if met else
                             ": short of the target; pruned again to") + f" a predicted {dense / budget.target_ms:.2f}x")
        again = prune_again()
        if any(again.mask.same_as(k) for k in masks):
            notes.append("latency check: pruning again gave a mask already measured; the level stands")
            break
        res = again
        notes += [n for n in res.notes if n not in notes]
    if not attempts:
        return res.mask, notes, None
    met = [i for i, a in enumerate(attempts) if a["met"]]
    pick = max(met, key=lambda i: attempts[i]["predicted_latency_ms"]) if met else len(attempts) - 1
    if pick != len(attempts) - 1 or not masks[pick].same_as(res.mask):
        notes.append(f"latency check: the level keeps measurement {pick + 1}, the widest that met the target")
    a = attempts[pick]
    check = {"met": a["met"], "measured_speedup": a["speedup"], "measured_speedup_ci": a["speedup_ci"],
             "measured_latency_ms": a["measured_latency_ms"], "dense_p50_ms": a["dense_p50_ms"],
             "ticket_p50_ms": a["ticket_p50_ms"], "kept": pick,
             "threads": budget.timing.resolved_threads(), "attempts": attempts}
    return masks[pick], notes, check


def latency_model_for(probe: nn.Module, groups: list[ChannelGroup], initial: Mask, size: tuple[int, int], timing,
                      *, arch: str, round_to: int = 8, in_graph: bool = False, remeasure: bool = False,
                      progress: bool = False):
    """The latency model of ``arch`` at ``size`` (``bench.latency_model``), calibrated on uniform channel
    tickets of ``probe`` at ``CALIBRATION_DENSITY``; measured, or read from the cache under ``arch@HxW``.

    ``in_graph=True`` also times one probe per group (that group alone at ``PROBE_FRACTION`` of its
    channels) and fits each group's in-graph factor; off by default, as on a noisy 2-core machine the
    probes' noise outweighs what they correct (BENCHMARKS.md, "In-graph group factors").
    """
    from edgeticket.bench.latency_model import (
        CALIBRATION_DENSITY,
        PROBE_FRACTION,
        GroupProbe,
        build_latency_model,
    )
    from edgeticket.tickets.criteria.channel import prune_channels
    from edgeticket.tickets.criteria.common import (
        channel_alive,
        keep_fraction,
        set_channels,
        with_bn_entries,
    )

    weights = probe.state_dict()
    calibration = [alive_widths(probe, prune_channels(weights, initial, groups, d, round_to).mask, groups)
                   for d in CALIBRATION_DENSITY]
    probes, base = {}, with_bn_entries(initial, groups)
    for g in groups if in_graph else []:
        m = Mask(base)
        alive = channel_alive(m, g)
        set_channels(m, g, keep_fraction(g, alive, alive.double(), PROBE_FRACTION, round_to))
        probes[g.name] = GroupProbe(tuple(g.producers), tuple(g.consumers), alive_widths(probe, m, groups))
    return build_latency_model(probe, size, calibration, timing, model_key=f"{arch}@{size[0]}x{size[1]}",
                               probes=probes, remeasure=remeasure, progress=progress)


def open_budget(ctx: SearchContext) -> LatencyBudget:
    """The latency table for this model (measured on rank 0, or read from the cache) and the widths of a mask."""
    from edgeticket.bench.latency_model import Timing

    cfg, probe, groups = ctx.cfg, ctx.probe, ctx.groups

    def widths(m: Mask) -> dict[str, tuple[int, int]]:
        return alive_widths(probe, m, groups)

    lm, timing = None, Timing(cfg.latency_provider, cfg.threads)
    if D.current().is_main:
        lm = latency_model_for(probe, groups, ctx.initial_mask(), tuple(cfg.data.input_size), timing,
                               arch=cfg.model.arch,
                               round_to=cfg.round_to, remeasure=cfg.remeasure, progress=ctx.progress)
    budget = LatencyBudget(D.broadcast_object(lm), widths, allocation=cfg.allocation, timing=timing)
    fastest = budget.model.predict(floor_widths(budget, ctx.initial_mask(), groups, cfg.round_to))
    if fastest > final_target_ms(ctx, budget):
        name = "target_speedup" if cfg.target_speedup is not None else "target_latency"
        raise FieldError(name, getattr(cfg, name), f"even with every channel group at its floor (--round-to "
                         f"{cfg.round_to}) the predicted latency is {fastest:.2f} ms, a speed-up of "
                         f"{budget.model.dense_ms / fastest:.2f}x over the dense {budget.model.dense_ms:.2f} ms; "
                         "choose a target within that")
    return budget


def meets_target(ctx: SearchContext, report: dict) -> bool:
    """A level meets the final target by its latency check where it was measured, else by its prediction."""
    check = report.get("latency_check")
    if check is not None:
        return bool(check["met"])
    return within(report["predicted_latency_ms"], final_target_ms(ctx))


def ends_search(ctx: SearchContext, report: dict) -> bool:
    """The first level predicted to meet the target is the last, and so is a level whose latency check
    ran (it was predicted to meet the target before the check corrected it), whatever the check
    measured: one short of the target has already been pruned again ``CHECK_TRIES`` times (or to the
    floor)."""
    return within(report["predicted_latency_ms"], final_target_ms(ctx)) or "latency_check" in report


def target_outcome(ctx: SearchContext, reports: list[dict]) -> dict:
    """Whether the search met its latency target, at which level, or how close it came (measured by the
    level's latency check where one ran)."""
    final = final_target_ms(ctx)
    dense = ctx.budget.model.dense_ms
    met = [r for r in reports if meets_target(ctx, r)]
    best = met[0] if met else min(reports, key=lambda r: r["predicted_latency_ms"])
    check = best.get("latency_check")
    text = (f"target {final:.2f} ms ({dense / final:.2f}x) "
            + (f"reached at level {best['level']}" if met else "not reached: the best level is "
               f"{best['level']}")
            + f": predicted {best['predicted_latency_ms']:.2f} ms, {best['predicted_speedup']:.2f}x over the dense "
              f"{dense:.2f} ms")
    if check is not None:
        lo, hi = check["measured_speedup_ci"]
        text += (f"; measured {check['measured_speedup']:.2f}x [{lo:.2f}, {hi:.2f}] beside the dense model "
                 f"({check['ticket_p50_ms']:.2f} against {check['dense_p50_ms']:.2f} ms, "
                 f"{len(check['attempts'])} measurement{'s' if len(check['attempts']) > 1 else ''})")
    out = {"target_latency_ms": final, "target_speedup": dense / final, "reached": bool(met), "level": best["level"],
           "predicted_latency_ms": best["predicted_latency_ms"], "predicted_speedup": best["predicted_speedup"],
           "message": text}
    if check is not None:
        out.update(measured_speedup=check["measured_speedup"], measured_speedup_ci=check["measured_speedup_ci"])
    return out


def run_level(ctx: SearchContext, level: int) -> dict:
    folder = paths.level_dir(ctx.root, level)
    if (folder / paths.SPARSITY).exists():
        return read_json(folder / paths.SPARSITY)
    mark_level(ctx, folder, level)
    notes: list[str] = []
    if (folder / paths.MASK).exists():
        mask = Mask.load(folder / paths.MASK)
    else:
        mask, notes, check = next_mask(ctx, level) if D.current().is_main else (None, [], None)
        mask, notes = D.broadcast_object((mask, notes))
        if D.current().is_main:
            if check is not None:  # before the mask: a level whose mask exists has its check
                write_json(folder / paths.LATENCY_CHECK, check)
            mask.save(folder / paths.MASK)
    start = ctx.rewind_weights() if level > 0 else ctx.level0_weights()
    meta = ctx.meta(level=level, criterion=ctx.cfg.criterion, branch="", rewind=str(ctx.cfg.rewind),
                    density_target=level_density(ctx.cfg, level), notes=notes)
    return train_masked(ctx, folder, mask, start, meta, level0=level == 0)


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
    ctx = SearchContext(root, cfg, prepared, dev, progress, teacher)
    if cfg.budgeted:
        ctx.budget = open_budget(ctx)  # an unreachable target is refused before anything is written
    with claim_out(root, "search", search_identity(cfg, prepared), resume=resume, overwrite=overwrite,
                   inputs={"data folder": data}):
        if D.current().is_main and not saved.exists():
            write_json(saved, {"config": cfg.to_dict(), "data": str(data), "cache": str(prepared.root)})
        reports = []
        for level in range(cfg.levels):
            if level > 0 and cfg.target_sparsity is not None and \
                    1 - level_density(cfg, level - 1) >= cfg.target_sparsity - 1e-9:
                break  # the previous level reached the target (the schedule is clamped to it)
            reports.append(run_level(ctx, level))
            faults.point("level")
            if ctx.budget is not None and ends_search(ctx, reports[-1]):
                break  # the first level that meets the latency target is the last
        if not D.current().is_main:
            return {}
        outcome = target_outcome(ctx, reports) if ctx.budget is not None else None
        return write_summary(root, target=outcome)


def search_identity(cfg: SearchConfig, prepared) -> dict:
    """The settings that make a search's levels what they are (what a resume must keep)."""
    d = {k: v for k, v in cfg.to_dict().items() if k != "remeasure"}
    return {**d, "data": data_identity(prepared), "train": train_identity(cfg.train)}


def _check_rewind_step(cfg: SearchConfig, n_train: int) -> None:
    if cfg.rewind.kind != "step":
        return
    _, spe = batch_plan(n_train, cfg.train, D.current().world)
    total = spe * cfg.train.epochs
    if cfg.rewind.k > total:
        raise FieldError("rewind", cfg.rewind, f"level 0 trains {cfg.train.epochs} epochs of {spe} steps "
                         f"({total} steps); choose a rewind point inside that")
    if cfg.rewind.k == total and cfg.levels > 1:
        raise FieldError("rewind", cfg.rewind, f"level 0's last step ({total}): the later levels resume there and "
                         "would train no steps; choose a rewind point before it")


def _changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Settings that differ, as dotted names; the learning rate may change on resume."""
    out = []
    for k in sorted(set(old) | set(new)):
        name = f"{prefix}{k}"
        if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            out += _changed_settings(old[k], new[k], f"{name}.")
        elif old.get(k) != new.get(k) and name not in ("train.lr", "train.compile", "train.compile_mode",
                                                        "train.eval_batch_size", "remeasure"):
            out.append(name)
    return out
