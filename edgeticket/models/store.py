"""A trained model is a directory: ``model.pt`` (plain state dict), ``meta.json``, optional ``mask.pt``.

``load_model_dir`` rebuilds the architecture from ``meta.json`` (widths after compaction
included) and loads the weights with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, read_json
from edgeticket.models.adapt import adapt_widths
from edgeticket.models.registry import build_model, get_record


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / paths.META
    if not path.is_file():
        raise UserError(f"{folder}: no {paths.META}; pass a finetune output or a search level/branch directory.")
    try:
        meta = read_json(path)
    except ValueError:
        raise UserError(f"{path}: not valid JSON; the file is corrupt.") from None
    if "arch" not in meta:
        raise UserError(f"{path}: names no 'arch'; this is not an edgeticket model directory.")
    get_record(meta["arch"])
    return meta


def build_from_meta(meta: dict) -> nn.Module:
    model = build_model(meta["arch"])
    if meta.get("widths"):
        adapt_widths(model, meta["widths"])
    return model


def load_state(model: nn.Module, path: Path, what: str = "weights") -> None:
    sd = load_torch(path, what=what)
    if not isinstance(sd, dict):
        raise UserError(f"{path}: not a state dict.")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise UserError(f"{path}: does not fit this model ({lines[1] if len(lines) > 1 else lines[0]}).") from None


def load_model_dir(folder: str | Path, weights: str = paths.MODEL) -> tuple[nn.Module, dict]:
    folder = Path(folder)
    meta = read_meta(folder)
    model = build_from_meta(meta)
    load_state(model, folder / weights)
    return model, meta
