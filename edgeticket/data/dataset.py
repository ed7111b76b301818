"""Reading a prepared cache into tensors.

A split at the input size is small (NYU's 795 training frames at 228x304 are 165 MB of uint8
RGB and 220 MB of float32 depth), so it is read whole into memory, or onto the GPU, and
batches are gathered by index: loading is never training's bottleneck.
Full-resolution ground truth (val/test) is streamed from disk batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeticket import paths
from edgeticket.data.prepare import CACHE_META, SPLITS
from edgeticket.errors import UserError
from edgeticket.fsio import read_json
from edgeticket.hparams import InputSize


@dataclass
class SplitTensors:
    """One split at the input size: rgb (N,3,h,w) uint8, depth (N,1,h,w) float32 metres."""

    name: str
    rgb: torch.Tensor
    depth: torch.Tensor
    frames: np.ndarray

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def to(self, device: torch.device | str) -> SplitTensors:
        return SplitTensors(self.name, self.rgb.to(device), self.depth.to(device), self.frames)


class PreparedData:
    """A finished training cache (see ``edgeticket.data.prepare``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / CACHE_META).is_file():
            raise UserError(f"--data {self.root}: not a prepared cache (no {CACHE_META}); run `edgeticket data prepare`.")
        self.meta = read_json(self.root / CACHE_META)
        self.input_size = InputSize(*self.meta["input_size"])

    def count(self, split: str) -> int:
        return int(self.meta["counts"][split])

    def _path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(split)
        return self.root / paths.cache_split(split)

    def load(self, split: str) -> SplitTensors:
        import h5py

        with h5py.File(self._path(split), "r") as f:
            rgb = torch.from_numpy(f["rgb"][...]).permute(0, 3, 1, 2).contiguous()
            depth = torch.from_numpy(f["depth"][...])[:, None].contiguous()
            frames = f["frame"][...]
        return SplitTensors(split, rgb, depth, frames)

    def iter_full(self, split: str, batch_size: int, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (rgb uint8 (B,3,h,w), full-resolution depth (B,1,480,640)) in frame order."""
        import h5py

        with h5py.File(self._path(split), "r") as f:
            if "depth_full" not in f:
                raise ValueError(f"{split} has no full-resolution depth")
            n = f["rgb"].shape[0] if limit is None else min(limit, f["rgb"].shape[0])
            for s in range(0, n, batch_size):
                e = min(n, s + batch_size)
                rgb = torch.from_numpy(f["rgb"][s:e]).permute(0, 3, 1, 2).contiguous()
                gt = torch.from_numpy(f["depth_full"][s:e])[:, None]
                yield rgb, gt
