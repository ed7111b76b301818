"""The optimiser and the learning-rate schedule: parameter groups, warm-up, cosine or step."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeticket.train.config import TrainConfig


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Encoder at lr, decoder and head at lr x decoder_lr_mult; no weight decay on BN or biases."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("encoder."), p.dim() <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_enc, no_decay), ps in sorted(groups.items()):
        lr = cfg.lr if is_enc else cfg.lr * cfg.decoder_lr_mult
        out.append({"params": ps, "lr": lr, "base_lr": lr, "encoder": is_enc,
                    "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def set_base_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    """The groups' base rates from ``cfg`` (a resumed run may lower --lr after divergence)."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] = cfg.lr * (1.0 if g["encoder"] else cfg.decoder_lr_mult)


def batch_plan(n_train: int, cfg: TrainConfig, world: int = 1) -> tuple[int, int]:
    """(images per step per rank, steps per epoch): the schedule's unit, fixed by the data size."""
    bs = min(cfg.batch_size, max(1, n_train // world))
    per_rank = -(-n_train // world)  # DistributedSampler pads every rank to the same length
    return bs, max(1, per_rank // bs)


def warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    total = steps_per_epoch * cfg.epochs
    return min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1) if cfg.epochs > 1 else 0


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The multiplier of the base rates at global ``step``: linear warm-up, then cosine or step."""
    total = steps_per_epoch * cfg.epochs
    warmup = warmup_steps(cfg, steps_per_epoch)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        every = (cfg.step_every or max(1, math.ceil(cfg.epochs / 3))) * steps_per_epoch
        return 0.1 ** (step // max(1, every))
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
