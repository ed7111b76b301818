"""Iterative magnitude pruning with rewinding: the Python API behind ``edgeticket search``.

Level 0 trains the whole model from the rewind point; its mask is all True. Each later level
prunes a fraction of what is still alive (judged on the previous level's final trained
weights), rewinds the survivors and retrains. Level k therefore keeps (1 - rate)^k of the
prunable weights, or for channel tickets of each group's channels (within ``round_to``).

Resumable at any point: a level is finished when its ``sparsity.json`` exists; its
``mask.pt`` is written (atomically) before its training starts, and the training itself
resumes from ``last.pt``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeticket import faults, paths
from edgeticket.data.dataset import PreparedData
from edgeticket.data.geometry import DEFAULT_INPUT_SIZE
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, read_json, save_torch, write_json
from edgeticket.models.adapt import layer_widths
from edgeticket.models.macs import count_macs
from edgeticket.models.registry import build_model, get_record
from edgeticket.tickets import criteria as C
from edgeticket.tickets.groups import ChannelGroup, build_graph, channel_groups, prunable_groups
from edgeticket.tickets.mask import Mask
from edgeticket.train import distributed as D
from edgeticket.train.finetune import check_out_dir, open_prepared, run_meta
from edgeticket.train.trainer import TrainConfig, Trainer, resolve_device

START = "start.pt"  # the weights level 0 starts from (pretrained, or a seeded random init)
INIT = "init.pt"  # a seeded random initialisation, the rewind point for --rewind init


@dataclass
class SearchConfig:
    arch: str
    pretrained: str = "none"
    levels: int = 5
    rate: float = 0.2
    criterion: str = "magnitude-global"
    scope: str = "all"
    include_conv1: bool = False
    round_to: int = 8
    rewind: str = "pretrained"
    target_sparsity: float | None = None
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    val_fraction: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        get_record(self.arch)
        C.check_criterion(self.criterion)
        if self.levels < 1:
            raise UserError(f"--levels {self.levels}: give at least 1 (level 0 is the dense model).")
        if not 0 < self.rate < 1:
            raise UserError(f"--rate {self.rate}: the fraction pruned per level must be in (0, 1).")
        if self.target_sparsity is not None and not 0 < self.target_sparsity < 1:
            raise UserError(f"--target-sparsity {self.target_sparsity}: give a fraction in (0, 1).")
        if self.round_to < 1:
            raise UserError(f"--round-to {self.round_to}: give at least 1.")
        if self.scope not in ("encoder", "decoder", "all"):
            raise UserError(f"--scope {self.scope!r}: choose encoder, decoder or all.")
        parse_rewind(self.rewind)
        self.train.check()

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> SearchConfig:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def parse_rewind(text: str) -> tuple[str, int]:
    """'pretrained' | 'init' | 'epoch:K' | 'step:K' -> (kind, K)."""
    if text in ("pretrained", "init"):
        return text, 0
    m = re.fullmatch(r"(epoch|step):(\d+)", text or "")
    if not m:
        raise UserError(f"--rewind {text!r}: choose pretrained, init, epoch:K or step:K.")
    return m.group(1), int(m.group(2))


def level_density(cfg: SearchConfig, level: int) -> float:
    density = (1 - cfg.rate) ** level
    if cfg.target_sparsity is not None:
        density = max(density, 1 - cfg.target_sparsity)
    return density


# -- the search's fixed context -----------------------------------------------------------------

class SearchContext:
    """What every level of one search shares: config, data, scope, groups, rewind weights."""

    def __init__(self, root: Path, cfg: SearchConfig, data: PreparedData, device: torch.device, progress: bool):
        self.root, self.cfg, self.data, self.device, self.progress = root, cfg, data, device, progress
        probe = build_model(cfg.arch)
        self.scope = C.prunable_names(probe, cfg.scope, cfg.include_conv1)
        self._groups: list[ChannelGroup] | None = None
        self._probe = probe
        self._model: nn.Module | None = None  # one training model for every level and branch
        self._net: nn.Module | None = None  # ... and its compiled wrapper, made once

    def training_model(self, weights: dict[str, torch.Tensor]) -> nn.Module:
        """The search's one training model, loaded in place with ``weights``."""
        if self._model is None:
            self._model = build_model(self.cfg.arch)
        self._model.load_state_dict(weights)
        return self._model

    @property
    def groups(self) -> list[ChannelGroup]:
        """Prunable dependency groups (built once, on the CPU)."""
        if self._groups is None:
            self._groups = prunable_groups(channel_groups(self._probe, build_graph(self._probe)), set(self.scope))
        return self._groups

    @property
    def channel(self) -> bool:
        return self.cfg.criterion == "channel"

    def initial_mask(self) -> Mask:
        mask = Mask.ones(self._probe, self.scope)
        return C.with_bn_entries(mask, self.groups) if self.channel else mask

    def start_weights(self) -> dict[str, torch.Tensor]:
        """Level 0's starting weights, saved once so every rerun starts identically."""
        path = self.root / START
        if D.current().is_main and not path.exists():
            torch.manual_seed(self.cfg.train.seed)
            model = build_model(self.cfg.arch, weights_backbone=self.cfg.pretrained, progress=self.progress)
            save_torch(path, model.state_dict())
        D.barrier()
        return load_torch(path, what="weights")

    def rewind_weights(self) -> dict[str, torch.Tensor]:
        kind, _ = parse_rewind(self.cfg.rewind)
        if kind == "pretrained":
            return self.start_weights()
        if kind == "init":
            # The original LTH: every level, level 0 included, starts from one seeded random
            # initialisation (the same tensors as start.pt under --pretrained none).
            path = self.root / INIT
            if D.current().is_main and not path.exists():
                torch.manual_seed(self.cfg.train.seed)
                save_torch(path, build_model(self.cfg.arch).state_dict())
            D.barrier()
            return load_torch(path, what="weights")
        path = paths.level_dir(self.root, 0) / paths.REWIND
        if not path.exists():
            raise UserError(f"{path}: level 0 did not save its {self.cfg.rewind} rewind point; rerun the search from scratch.")
        return load_torch(path, what="weights")

    def meta(self, **extra) -> dict:
        return run_meta(self.cfg.arch, self.data, pretrained=self.cfg.pretrained, task="search",
                        search=str(self.root), **extra)


def alive_widths(model: nn.Module, mask: Mask, groups: list[ChannelGroup]) -> dict[str, tuple[int, int]]:
    """{module: (in alive, out alive)} once a mask's removable channels are gone, for MAC counting."""
    alive = layer_widths(model)
    for g in groups:
        if not all(w in mask for w in g.weight_names()):
            continue
        n = int((~C.channel_dead(mask, g)).sum())
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
    density = level_density(ctx.cfg, level)
    faults.point("mask")
    if ctx.cfg.criterion == "magnitude-global":
        res = C.magnitude_global(weights, mask, density)
    elif ctx.cfg.criterion == "magnitude-layerwise":
        res = C.magnitude_layerwise(weights, mask, density)
    else:
        res = C.prune_channels(weights, mask, ctx.groups, density, ctx.cfg.round_to)
    return res.mask, res.notes


def train_masked(ctx: SearchContext, folder: Path, mask: Mask, start: dict[str, torch.Tensor], meta: dict,
                 rewind: tuple[str, int] | None = None) -> dict:
    """Train a masked model from ``start`` into ``folder`` (resuming a killed run), then write sparsity.json."""
    model = ctx.training_model(start)
    mask.check_fits(model, str(folder / paths.MASK))
    mask.apply_(model)
    single = not D.current().enabled  # under DDP each level wraps afresh (no compiled module to keep)
    trainer = Trainer(model, ctx.data, copy.deepcopy(ctx.cfg.train), folder, meta=meta, mask=mask,
                      device=ctx.device, progress=ctx.progress, rewind=rewind, net=ctx._net if single else None)
    if single:
        ctx._net = trainer.net
    trainer.fit(resume=(folder / paths.LAST).exists())
    report = sparsity_report(ctx, mask, meta)
    if D.current().is_main:
        write_json(folder / paths.SPARSITY, report)
    D.barrier()
    return report


def sparsity_report(ctx: SearchContext, mask: Mask, meta: dict) -> dict:
    rep = mask.report()
    macs = {"dense": count_macs(ctx._probe, tuple(ctx.cfg.input_size))}
    macs["channel"] = count_macs(ctx._probe, tuple(ctx.cfg.input_size), alive_widths(ctx._probe, mask, ctx.groups))
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
    kind, k = parse_rewind(ctx.cfg.rewind)
    late = (kind, k) if kind in ("epoch", "step") else None
    start = ctx.rewind_weights() if level > 0 or kind == "init" else ctx.start_weights()
    meta = ctx.meta(level=level, criterion=ctx.cfg.criterion, branch="", rewind=ctx.cfg.rewind,
                    density_target=level_density(ctx.cfg, level), notes=notes)
    return train_masked(ctx, folder, mask, start, meta, rewind=late if level == 0 else None)


# -- the search -------------------------------------------------------------------------------------

def search(data: str | Path, cfg: SearchConfig, out: str | Path, *, device: str | None = "cpu", resume: bool = False,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or resume) an IMP search; return the summary."""
    from edgeticket.tickets.summary import write_summary

    cfg.check()
    root = Path(out)
    dev = resolve_device(device)
    D.init_from_env(str(dev))
    if D.current().enabled and dev.type == "cuda":
        dev = torch.device("cuda", D.current().local_rank)
    check_out_dir(root, resume, overwrite, data)
    saved = root / paths.SEARCH
    if saved.exists():
        old = read_json(saved).get("config", {})
        diff = _changed_settings(old, cfg.to_json())
        if old and diff:
            raise UserError(f"--resume {root}: the search was started with other settings ({', '.join(diff)}); "
                            "use the same options, or --overwrite to start over.")
    root.mkdir(parents=True, exist_ok=True)
    prepared = open_prepared(data, tuple(cfg.input_size), cfg.val_fraction, cfg.train.seed, progress)
    if D.current().is_main and not saved.exists():
        write_json(saved, {"config": cfg.to_json(), "data": str(data), "cache": str(prepared.root)})
    ctx = SearchContext(root, cfg, prepared, dev, progress)
    for level in range(cfg.levels):
        if level > 0 and cfg.target_sparsity is not None and 1 - level_density(cfg, level - 1) >= cfg.target_sparsity - 1e-9:
            break  # the previous level reached the target (the schedule is clamped to it)
        run_level(ctx, level)
        faults.point("level")
    return write_summary(root) if D.current().is_main else {}


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
