"""Fine-tuning a dense model or a ticket: the Python API behind ``edgeticket finetune``."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.models.registry import build_model
from edgeticket.train.config import FinetuneConfig
from edgeticket.train.run import (
    DEFAULT_DEVICE,
    claim_out,
    data_identity,
    open_prepared,
    refuse_out_near_data,
    run_meta,
    setup_device,
    train_identity,
)
from edgeticket.train.trainer import Trainer, TrainResult


def finetune(
    data: str | Path,
    out: str | Path,
    config: FinetuneConfig | None = None,
    *,
    mask=None,
    init_from: str | Path | None = None,
    start_step=0,
    device: str = DEFAULT_DEVICE,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune on ``data`` (a dataset folder or a prepared cache); write a model directory at ``out``.

    ``mask`` is a ticket (``edgeticket.Mask``, e.g. ``Mask.load(level_dir)``): it is checked
    against the model, and its origin (level, criterion, sparsity) goes into meta.json.
    ``init_from`` starts from other weights than the pretrained ones: a model directory (its
    ``model.pt``) or a weights file (a plain state dict, such as a search's rewind point
    ``start.pt``, ``init.pt`` or ``level_00/rewind.pt``, see ``edgeticket.tickets.start``).
    ``start_step`` begins at that step of the schedule and the data order, for weights that have
    already trained that many steps (a late rewinding point), so the run ends at the same total
    step count as one from step 0: a step number, or anything with ``step(steps_per_epoch)``
    (a ``RewindPoint`` such as epoch:K, a ``TicketStart``), counted in this run's own steps.
    meta.json's ``start`` records the weights (path and sha256) and the step. With
    ``config.train.distill`` (a trained model directory) the loss adds the distillation term
    (``edgeticket.train.distill``); meta.json's ``distill`` records the teacher and its sha256.
    """
    from edgeticket.tickets.mask import describe_ticket
    from edgeticket.train.distill import teacher_for

    cfg = config or FinetuneConfig()
    out = Path(out)
    weights = _start_weights(init_from)
    teacher = teacher_for(cfg.train, cfg.model.arch, out)  # a bad --distill exits before anything is written
    dev = setup_device(device)
    refuse_out_near_data(out, data)  # before the data folder gets a cache
    prepared = open_prepared(data, cfg.data, progress)
    start_step = _checked_start_step(start_step, prepared.count("train"), cfg)  # before --overwrite clears anything
    start = start_record(weights, start_step, cfg)
    identity = {"model": cfg.model.to_dict(), "data": data_identity(prepared), "train": train_identity(cfg.train),
                "mask": mask_digest(mask), "start": {k: v for k, v in start.items() if k != "weights"}}
    inputs = {"data folder": data, "mask": None if mask is None else mask.source, "weights": weights}
    with claim_out(out, "finetune", identity, resume=resume, overwrite=overwrite, inputs=inputs):
        torch.manual_seed(cfg.train.seed)
        arch = cfg.model.arch
        model = build_model(arch, weights_backbone=None if weights else cfg.model.pretrained)
        if weights is not None:
            from edgeticket.models.store import load_state

            load_state(model, weights)
        extra = {}
        if mask is not None:
            mask.check_fits(model, f"--mask {mask.source}")
            extra = describe_ticket(mask, model)
        meta = run_meta(arch, prepared, pretrained=cfg.model.pretrained, task="finetune",
                        data_config=cfg.data.to_dict(), start=start, **extra)
        trainer = Trainer(model, prepared, cfg.train, out, meta=meta, mask=mask, device=dev, progress=progress,
                          teacher=teacher)
        return trainer.fit(resume=resume, start_step=start_step)


def mask_digest(mask) -> str | None:
    """A short hash of a mask's entries (names and bits): the ticket a run trains, for its identity."""
    if mask is None:
        return None
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for name in sorted(mask):
        h.update(name.encode())
        h.update(np.packbits(mask[name].detach().cpu().numpy().ravel()).tobytes())
    return h.hexdigest()[:16]


def _checked_start_step(start, n_train: int, cfg: FinetuneConfig) -> int:
    from edgeticket.train import distributed as D
    from edgeticket.train.optim import batch_plan

    spe = batch_plan(n_train, cfg.train, D.current().world)[1]
    step = int(start.step(spe)) if hasattr(start, "step") else int(start)
    if not 0 <= step < spe * cfg.train.epochs:
        raise UserError(f"--start-step {step}: this run has {spe * cfg.train.epochs} steps ({cfg.train.epochs} "
                        f"epochs of {spe}); give a step inside it.")
    return step


def _start_weights(init_from: str | Path | None) -> Path | None:
    """The weights file ``init_from`` names: the file itself, or a model directory's model.pt."""
    if init_from is None:
        return None
    p = Path(init_from)
    if p.is_dir():
        p = p / paths.MODEL
    if not p.is_file():
        raise UserError(f"--init-from {init_from}: no such weights file or model directory (with {paths.MODEL}).")
    return p


def start_record(weights: Path | None, step: int, cfg: FinetuneConfig) -> dict:
    """meta.json's ``start``: where the weights came from and at which step training began."""
    from edgeticket.fsio import sha256_file

    if weights is None:
        return {"weights": f"pretrained:{cfg.model.pretrained}", "seed": cfg.train.seed, "step": int(step)}
    return {"weights": str(weights.resolve()), "sha256": sha256_file(weights), "step": int(step)}
