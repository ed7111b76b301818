"""Fine-tuning a dense model or a ticket: the Python API behind ``edgeticket finetune``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from edgeticket import paths
from edgeticket.data.dataset import PreparedData
from edgeticket.data.prepare import resolve_data
from edgeticket.errors import UserError
from edgeticket.fsio import dir_is_nonempty, remove_stale_temps, versions
from edgeticket.models.registry import build_model, get_record
from edgeticket.train import distributed as D
from edgeticket.train.trainer import TrainConfig, Trainer, TrainResult, resolve_device


def check_out_dir(out: Path, resume: bool, overwrite: bool, data: str | Path | None = None) -> None:
    """Refuse a non-empty ``--out`` unless resuming or overwriting; ``--overwrite`` clears it.

    An ``--out`` inside the data folder is refused too: runs and datasets stay apart.
    """
    out = Path(out)
    if data is not None:
        d, o = Path(data).resolve(), out.resolve()
        if o == d or d in o.parents:
            raise UserError(f"--out {out}: is inside the data folder {data}; choose a folder outside it.")
        if o in d.parents:
            raise UserError(f"--out {out}: holds the data {data}; choose an --out beside the data, not above it.")
    # Rank 0 decides and acts; every rank then meets at the same barrier.
    action = _out_dir_action(out, resume, overwrite) if D.current().is_main else None
    action = D.broadcast_object(action)
    D.barrier()
    if action and action.startswith("error:"):
        raise UserError(action.removeprefix("error:"))


def _out_dir_action(out: Path, resume: bool, overwrite: bool) -> str:
    if not dir_is_nonempty(out):
        return "fresh"
    if resume:
        remove_stale_temps(out)
        return "resume"
    if not overwrite:
        return f"error:--out {out}: is not empty; pass --resume to continue that run or --overwrite to replace it."
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return "overwritten"


def run_meta(arch: str, data: PreparedData, **extra) -> dict:
    """meta.json: enough to rebuild the model and to tell, later, what made it."""
    rec = get_record(arch)
    return {
        "arch": arch,
        "input_size": list(data.input_size),
        "mean": list(rec.mean),
        "std": list(rec.std),
        "output_units": "metres",
        "data": {
            "cache": str(data.root.resolve()),
            "source": data.meta.get("source"),
            "source_sha256": data.meta.get("source_sha256"),
            "cache_key": data.meta.get("key"),
            "split_origin": data.meta.get("split_origin"),
            "counts": data.meta.get("counts"),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        **extra,
    }


def open_prepared(data: str | Path, input_size: tuple[int, int] | None, val_fraction: float = 0.1, seed: int = 0,
                  progress: bool = True) -> PreparedData:
    """A dataset folder or a prepared cache -> the cache; rank 0 prepares, the others wait."""
    if D.current().is_main:
        root = resolve_data(data, input_size, val_fraction, seed, progress=progress)
    D.barrier()
    if not D.current().is_main:
        root = resolve_data(data, input_size, val_fraction, seed, progress=False)
    return PreparedData(root)


def finetune(
    data: str | Path,
    arch: str,
    out: str | Path,
    cfg: TrainConfig,
    *,
    pretrained: str = "imagenet",
    mask=None,
    extra_meta: dict | None = None,
    input_size: tuple[int, int] | None = None,
    val_fraction: float = 0.1,
    device: str | None = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``arch`` on ``data``; write a model directory at ``out``.

    ``mask`` is a ticket (``edgeticket.tickets.Mask``: it is checked against the model with its
    ``check_fits``); ``extra_meta`` goes into meta.json (a ticket's level, criterion, sparsity).
    ``init_from`` starts from a model directory's ``model.pt`` instead of ``pretrained``.
    """
    out = Path(out)
    dev = resolve_device(device)
    D.init_from_env(str(dev))
    if D.current().enabled and dev.type == "cuda":
        dev = torch.device("cuda", D.current().local_rank)
    get_record(arch)
    cfg.check()
    check_out_dir(out, resume, overwrite, data)
    prepared = open_prepared(data, input_size, val_fraction, cfg.seed, progress)
    torch.manual_seed(cfg.seed)
    model = build_model(arch, weights_backbone=None if init_from else pretrained)
    if init_from is not None:
        from edgeticket.models.store import load_state

        load_state(model, Path(init_from) / paths.MODEL)
    if mask is not None:
        mask.check_fits(model, f"--mask {mask.source}")
    meta = run_meta(arch, prepared, pretrained=pretrained, task="finetune", **(extra_meta or {}))
    trainer = Trainer(model, prepared, cfg, out, meta=meta, mask=mask, device=dev, progress=progress)
    return trainer.fit(resume=resume)
