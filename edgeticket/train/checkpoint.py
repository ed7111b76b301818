"""The resumable training state (``last.pt``): what it holds and when a resume may use it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from edgeticket.errors import UserError
from edgeticket.fsio import load_torch
from edgeticket.train.config import RESUMABLE_CHANGES, TrainConfig


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, arch: str | None, *,
                   epoch: int, step_in_epoch: int, global_step: int, best: dict, prev_median: float,
                   epoch_losses: torch.Tensor) -> dict:
    return {
        "arch": arch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,  # epochs fully done
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "best": best,
        "prev_median": prev_median,
        "epoch_losses": epoch_losses.detach().cpu(),
        "config": asdict(cfg),
    }


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                        arch: str | None) -> dict | None:
    """Load ``path`` into ``model`` and ``optimizer``; refuse a checkpoint of another run."""
    if not path.exists():
        return None
    state = load_torch(path, what="checkpoint")
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path}: not an edgeticket checkpoint; remove it or choose another --out.")
    if state.get("arch") != arch:
        raise UserError(f"{path}: the checkpoint is for {state.get('arch')!r}, not {arch!r}; "
                        "resume with the same --arch or choose another --out.")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"{path}: does not fit this model ({str(e).splitlines()[0]}); choose another --out.") from None
    saved = state.get("config", {})
    changed = [k for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v]
    if changed:
        raise UserError(f"{path}: this run was started with other settings ({', '.join(changed)}); resume with "
                        "the same options (only --lr may change), or start over with --overwrite.")
    return state
