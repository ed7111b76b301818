"""Fine-tuning a dense model or a ticket: the Python API behind ``edgeticket finetune``."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeticket import paths
from edgeticket.models.registry import build_model
from edgeticket.train.config import FinetuneConfig
from edgeticket.train.run import (
    DEFAULT_DEVICE,
    check_out_dir,
    open_prepared,
    run_meta,
    setup_device,
)
from edgeticket.train.trainer import Trainer, TrainResult


def finetune(
    data: str | Path,
    out: str | Path,
    config: FinetuneConfig | None = None,
    *,
    mask=None,
    init_from: str | Path | None = None,
    device: str = DEFAULT_DEVICE,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune on ``data`` (a dataset folder or a prepared cache); write a model directory at ``out``.

    ``mask`` is a ticket (``edgeticket.Mask``, e.g. ``Mask.load(level_dir)``): it is checked
    against the model, and its origin (level, criterion, sparsity) goes into meta.json.
    ``init_from`` starts from a model directory's ``model.pt`` instead of the pretrained weights.
    """
    from edgeticket.tickets.mask import describe_ticket

    cfg = config or FinetuneConfig()
    out = Path(out)
    dev = setup_device(device)
    check_out_dir(out, resume, overwrite, data)
    prepared = open_prepared(data, cfg.data, progress)
    torch.manual_seed(cfg.train.seed)
    arch = cfg.model.arch
    model = build_model(arch, weights_backbone=None if init_from else cfg.model.pretrained)
    if init_from is not None:
        from edgeticket.models.store import load_state

        load_state(model, Path(init_from) / paths.MODEL)
    extra = {}
    if mask is not None:
        mask.check_fits(model, f"--mask {mask.source}")
        extra = describe_ticket(mask)
    meta = run_meta(arch, prepared, pretrained=cfg.model.pretrained, task="finetune", data_config=cfg.data.to_dict(),
                    **({"init_from": str(init_from)} if init_from else {}), **extra)
    trainer = Trainer(model, prepared, cfg.train, out, meta=meta, mask=mask, device=dev, progress=progress)
    return trainer.fit(resume=resume)
