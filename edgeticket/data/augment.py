"""Batch augmentation for FCRN on NYU (Ma & Karaman's sparse-to-dense recipe), on the device.

Per sample: scale s in [1, 1.5] (upsample by s, random crop back, depth / s), rotation within
+-5 degrees, horizontal flip, colour jitter 0.4, then ImageNet normalisation. Geometry is one
affine warp through ``grid_sample``. Random parameters are drawn on the CPU from a seeded
generator, so the result is the same on CPU and GPU, and a sample whose parameters are the
identity is passed through untouched: with s = 1, no rotation and no flip a training sample
equals the evaluation input exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgeticket.models.registry import IMAGENET_MEAN, IMAGENET_STD


def to_input(rgb_u8: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N,3,h,w) -> normalised float: the evaluation input."""
    x = rgb_u8.to(dtype) / 255.0
    return normalize(x, mean, std)


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (1.0, 1.5)
    rotate_deg: float = 5.0
    jitter: float = 0.4
    flip: bool = True


@dataclass
class AugmentParams:
    """Per-sample parameters, (N,) tensors; exposed so tests can set them."""

    scale: torch.Tensor
    angle: torch.Tensor  # radians
    tx: torch.Tensor  # crop centre offset in normalised coordinates
    ty: torch.Tensor
    flip: torch.Tensor  # bool
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor

    def to(self, device: torch.device | str) -> AugmentParams:
        """All parameters in one transfer; pinned and asynchronous on CUDA, so no host sync."""
        device = torch.device(device)
        names = list(vars(self))
        packed = torch.stack([getattr(self, k).float() for k in names])
        if device.type == "cuda":
            packed = packed.pin_memory().to(device, non_blocking=True)
        else:
            packed = packed.to(device)
        out = dict(zip(names, packed, strict=True))
        out["flip"] = out["flip"] > 0.5
        return AugmentParams(**out)

    @staticmethod
    def identity(n: int) -> AugmentParams:
        one, zero = torch.ones(n), torch.zeros(n)
        return AugmentParams(one, zero, zero, zero, torch.zeros(n, dtype=torch.bool), one, one, one)


def sample_params(n: int, cfg: AugmentConfig, generator: torch.Generator) -> AugmentParams:
    u = torch.rand(n, 8, generator=generator)
    lo, hi = cfg.scale
    s = lo + (hi - lo) * u[:, 0]
    angle = (2 * u[:, 1] - 1) * math.radians(cfg.rotate_deg)
    room = 1 - 1 / s  # the crop window (1/s of the frame) may move this far from the centre
    tx = (2 * u[:, 2] - 1) * room
    ty = (2 * u[:, 3] - 1) * room
    flip = (u[:, 4] < 0.5) if cfg.flip else torch.zeros(n, dtype=torch.bool)
    j = cfg.jitter
    b, c, sat = (1 - j + 2 * j * u[:, k] for k in (5, 6, 7))
    return AugmentParams(s, angle, tx, ty, flip, b, c, sat)


def augment(rgb_u8: torch.Tensor, depth: torch.Tensor, params: AugmentParams,
            mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: uint8 RGB (N,3,h,w) and depth (N,1,h,w) -> normalised input, depth."""
    dev = rgb_u8.device
    p = vars(params.to(dev))
    x = rgb_u8.to(dtype) / 255.0
    n = x.shape[0]
    identity = (p["scale"] == 1) & (p["angle"] == 0) & (p["tx"] == 0) & (p["ty"] == 0) & ~p["flip"]

    # Output pixel (u, v) in [-1, 1] samples the source at R(angle) * (u * f / s, v / s) + t.
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    fx = torch.where(p["flip"], -1.0, 1.0) / p["scale"]
    fy = 1.0 / p["scale"]
    h, w = x.shape[-2:]
    aspect = w / h  # rotate in pixel space, not in the anisotropic normalised space
    theta = torch.zeros(n, 2, 3, device=dev, dtype=torch.float32)
    theta[:, 0, 0] = cos * fx
    theta[:, 0, 1] = -sin * fy / aspect
    theta[:, 1, 0] = sin * fx * aspect
    theta[:, 1, 1] = cos * fy
    theta[:, 0, 2] = p["tx"]
    theta[:, 1, 2] = p["ty"]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    xw = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(dtype)
    # Depth: nearest, so missing (0) pixels never blend into valid ones; then /s.
    dw = F.grid_sample(depth.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    dw = dw / p["scale"].view(n, 1, 1, 1)
    keep = identity.view(n, 1, 1, 1)
    x = torch.where(keep, x, xw)
    depth = torch.where(keep, depth.float(), dw)

    x = _jitter(x, p["brightness"], p["contrast"], p["saturation"])
    return normalize(x, mean, std), depth


def _jitter(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter order (brightness, contrast, saturation), batched.

    A factor of exactly 1 leaves its sample untouched (no rounding from x - m + m).
    """
    n = x.shape[0]
    b, c, s = (v.view(n, 1, 1, 1).to(x.dtype) for v in (b, c, s))
    x = torch.where(b == 1, x, (x * b).clamp(0, 1))
    m = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = torch.where(c == 1, x, ((x - m) * c + m).clamp(0, 1))
    g = _gray(x)
    return torch.where(s == 1, x, ((x - g) * s + g).clamp(0, 1))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
