"""The one resize that turns a 480x640 frame into a model input, shared by prepare and bench.

The whole frame is resized to the input size, with no crop: 228x304 keeps the frame's 3:4
aspect, so a prediction maps back onto the 480x640 ground truth by plain upsampling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgeticket.hparams import InputSize

DEFAULT_INPUT_SIZE = InputSize(228, 304)  # Laina et al.'s input: the 480x640 frame halved, 3:4 kept


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 -> hxwx3 uint8, bilinear with antialiasing, whole frame, no crop."""
    x = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxW float32 metres -> hxw, averaging valid (> 0) pixels only.

    A target pixel whose footprint is mostly missing depth stays 0 (missing), so holes never
    blend into valid depth.
    """
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    valid = (d > 0).float()
    num = F.interpolate(d * valid, size=size, mode="bilinear", align_corners=False, antialias=True)
    den = F.interpolate(valid, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = torch.where(den > 0.5, num / den.clamp_min(1e-6), torch.zeros_like(num))
    return out[0, 0].numpy().astype(np.float32)
