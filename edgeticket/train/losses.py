"""Depth losses. Pixels whose target depth is 0 (missing) are ignored.

They are written with masks, not boolean indexing, so a training step never syncs with the
host on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edgeticket.errors import UserError


def _valid(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = (target > 0).float()
    return valid, valid.sum().clamp_min(1.0)


def berhu(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Laina et al.'s reverse Huber: |x| for |x| <= c, (x^2 + c^2) / (2c) above.

    c = 0.2 * max |x| over the valid pixels of the batch (a constant for the gradient).
    """
    valid, n = _valid(target)
    x = (pred.float() - target.float()) * valid
    ax = x.abs()
    c = 0.2 * ax.amax().detach()
    c_safe = c.clamp_min(1e-12)  # c = 0 only when every residual is 0: the linear branch holds
    per_pixel = torch.where(ax <= c, ax, (x * x + c * c) / (2 * c_safe))
    return (per_pixel * valid).sum() / n


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid, n = _valid(target)
    return ((pred.float() - target.float()).abs() * valid).sum() / n


def silog(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Eigen et al.'s scale-invariant log loss: mean(d^2) - lam * mean(d)^2, d = log pred - log gt."""
    valid, n = _valid(target)
    d = (torch.log(pred.float().clamp_min(1e-3)) - torch.log(target.float().clamp_min(1e-3))) * valid
    return (d * d).sum() / n - lam * (d.sum() / n) ** 2


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"berhu": berhu, "l1": l1, "silog": silog}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise UserError(f"--loss {name!r}: choose one of {', '.join(LOSSES)}.")
    return LOSSES[name]
