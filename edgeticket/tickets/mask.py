"""The ``Mask`` type: parameter name -> bool tensor, used everywhere a mask appears.

A mask holds exactly the prunable parameters in scope (conv weights, ndim 4) under the model's
own names. A channel ticket also holds the weight and bias of each BatchNorm behind a pruned
conv (ndim 1), masked with its channels, so that the channel is truly zero; those entries do
not count in sparsity figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, save_torch


class Mask(dict):
    """A dict of bool tensors keyed by parameter name; ``source`` names the file it came from."""

    def __init__(self, entries: Mapping[str, torch.Tensor] | None = None, source: str = "mask"):
        super().__init__()
        self.source = getattr(entries, "source", source)
        for k, v in (entries or {}).items():
            self[k] = v

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"mask entry {key!r} is {type(value).__name__}, not a tensor")
        if value.dtype != torch.bool:
            if not ((value == 0) | (value == 1)).all():
                raise ValueError(f"mask entry {key!r} holds values other than 0 and 1")
            value = value.bool()
        super().__setitem__(key, value.detach().cpu())

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, names: Iterable[str]) -> Mask:
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})

    @classmethod
    def load(cls, path: str | Path, allow_pickle: bool = False) -> Mask:
        """Read ``mask.pt`` (or a directory holding one); values must be 0/1."""
        path = Path(path)
        if path.is_dir():
            path = path / paths.MASK
        raw = load_torch(path, allow_pickle=allow_pickle, what="mask",
                         pickle_hint="save masks as a plain dict of bool tensors, or import a trusted file with "
                                     "`edgeticket tickets import --allow-pickle`")
        if not isinstance(raw, Mapping) or not raw:
            raise UserError(f"{path}: not a mask (a dict of parameter name -> bool tensor).")
        out = cls(source=str(path))
        for k, v in raw.items():
            if not isinstance(v, torch.Tensor):
                raise UserError(f"{path}: entry {k!r} is {type(v).__name__}, not a tensor.")
            if v.dtype != torch.bool and not ((v == 0) | (v == 1)).all():
                raise UserError(f"{path}: entry {k!r} holds values other than 0 and 1; a mask is binary.")
            out[k] = v
        return out

    def save(self, path: str | Path) -> None:
        """The one writer of ``mask.pt``: a plain dict of bool tensors, written atomically."""
        save_torch(path, {k: v.clone() for k, v in self.items()})

    @property
    def is_channel_ticket(self) -> bool:
        """True when the mask holds BN entries: it masks whole channels, which compaction removes."""
        return any(v.dim() == 1 for v in self.values())

    # -- checks ---------------------------------------------------------------------------
    def check_fits(self, model: nn.Module, source: str | None = None) -> None:
        """Every key must be a parameter of ``model`` with the same shape; list the first misfits."""
        params = dict(model.named_parameters())
        problems = []
        for k, v in self.items():
            if k not in params:
                problems.append(f"{k} is not a parameter of the model")
            elif tuple(v.shape) != tuple(params[k].shape):
                problems.append(f"{k} has shape {tuple(v.shape)}, the model's is {tuple(params[k].shape)}")
        source = source or self.source
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise UserError(f"{source}: does not fit this model: {'; '.join(problems[:3])}{more}.")

    # -- figures --------------------------------------------------------------------------
    def weight_keys(self) -> list[str]:
        """The entries that count in sparsity: weights (ndim >= 2), not BN companions."""
        return [k for k, v in self.items() if v.dim() >= 2]

    def sparsity(self) -> float:
        """The mask's own zeros (``mask_sparsity``); the figure reports use is
        ``tickets.sparsity.effective_sparsity``, which also counts dead channels."""
        keys = self.weight_keys()
        total = sum(self[k].numel() for k in keys)
        alive = sum(int(self[k].sum()) for k in keys)
        return 1.0 - alive / total if total else 0.0

    def density(self) -> float:
        return 1.0 - self.sparsity()

    def channel_sparsity(self) -> float:
        """Fraction of output channels that are entirely pruned, over weight entries."""
        total = dead = 0
        for k in self.weight_keys():
            v = self[k]
            alive = v.flatten(1).any(dim=1)
            total += alive.numel()
            dead += int((~alive).sum())
        return dead / total if total else 0.0

    def report(self) -> dict:
        """Per layer and total, unstructured and by channels."""
        layers = {}
        for k in self.weight_keys():
            v = self[k]
            ch_alive = v.flatten(1).any(dim=1)
            layers[k] = {
                "shape": list(v.shape),
                "weights": int(v.numel()),
                "alive": int(v.sum()),
                "sparsity": 1.0 - float(v.sum()) / v.numel(),
                "channels": int(ch_alive.numel()),
                "channels_alive": int(ch_alive.sum()),
                "channel_sparsity": 1.0 - float(ch_alive.sum()) / ch_alive.numel(),
            }
        total_w = sum(v["weights"] for v in layers.values())
        alive_w = sum(v["alive"] for v in layers.values())
        total_c = sum(v["channels"] for v in layers.values())
        alive_c = sum(v["channels_alive"] for v in layers.values())
        return {
            "total": {
                "weights": total_w,
                "alive": alive_w,
                "sparsity": 1.0 - alive_w / total_w if total_w else 0.0,
                "channels": total_c,
                "channels_alive": alive_c,
                "channel_sparsity": 1.0 - alive_c / total_c if total_c else 0.0,
            },
            "layers": layers,
        }

    # -- use ------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for k, v in self.items():
            p = params[k]
            p.mul_(v.to(device=p.device, dtype=p.dtype))

    def same_as(self, other: Mask) -> bool:
        """True when both masks have the same entries, element for element."""
        return self.keys() == other.keys() and all(torch.equal(self[k], other[k]) for k in self)

    def is_nested_in(self, other: Mask) -> bool:
        """True when every weight alive here is alive in ``other`` (pruned stays pruned)."""
        return all(not (self[k] & ~other[k]).any() for k in self if k in other)


def describe_ticket(mask: Mask, model: nn.Module | None = None) -> dict:
    """What a ticket carries into a model's meta.json: its origin, level, criterion and sparsity
    (effective, as ``tickets.sparsity`` counts it; a channel ticket needs ``model`` for that)."""
    from edgeticket.fsio import read_json
    from edgeticket.tickets.sparsity import sparsity_report

    mask_src = Path(mask.source)
    folder = mask_src.parent if mask_src.is_file() else None  # a mask built in memory has no folder
    src_meta = {}
    if folder is not None and (folder / paths.META).exists():
        try:
            src_meta = read_json(folder / paths.META)
        except ValueError:
            src_meta = {}
    info = {k: src_meta.get(k) for k in ("level", "criterion")}
    info["branch"] = src_meta.get("branch") or ""
    total = sparsity_report(mask, model)["total"]
    return {
        **info,
        "ticket": {**info, "mask": str(mask_src), **{k: total[k] for k in ("sparsity", "mask_sparsity", "channel_sparsity")}},
    }
