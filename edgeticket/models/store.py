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
from edgeticket.models.registry import build_model


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / paths.META
    if not path.is_file():
        raise UserError(f"{folder}: no {paths.META}; pass a finetune output or a search level/branch directory.")
    try:
        meta = read_json(path)
    except ValueError:
        raise UserError(f"{path}: not valid JSON; the file is corrupt.") from None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise UserError(f"{path}: names no 'arch'; this is not an edgeticket model directory.")
    check_meta(meta, path)
    return meta


def check_meta(meta: dict, path: Path) -> None:
    """The values a model directory's meta.json must hold to be rebuilt and preprocessed; a bad one
    is blamed on the file (it was written by a command, or edited by hand), not on an option."""
    import math

    from edgeticket.hparams import InputSize
    from edgeticket.models.registry import list_models

    if meta["arch"] not in list_models():
        raise UserError(f"{path}: arch {meta['arch']!r} is not a known model ({', '.join(list_models())}); was the "
                        "file edited, or written by a newer edgeticket?")
    for key in ("input_size", "mean", "std"):
        if key not in meta:
            raise UserError(f"{path}: has no {key!r}; the file is incomplete (was it edited by hand?).")
    try:
        InputSize.parse(meta["input_size"])
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: input_size {meta['input_size']!r}: {e}.") from None
    for key in ("mean", "std"):
        v = meta[key]
        ok = isinstance(v, list) and len(v) == 3 and all(isinstance(x, int | float) and not isinstance(x, bool)
                                                          and math.isfinite(x) for x in v)
        if not ok or (key == "std" and min(v) <= 0):
            raise UserError(f"{path}: {key} {v!r}: give three finite numbers{', each > 0' if key == 'std' else ''}.")


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
