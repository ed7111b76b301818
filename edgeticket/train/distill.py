"""Distillation from a trained model: the teacher, and its record in meta.json.

``--distill TEACHER_DIR`` makes the loss the task loss plus ``--distill-weight`` times the L1
distance between the student's and the teacher's depth on the valid pixels (those with ground
truth), as compression toolkits recover a pruned model's accuracy from the dense one. The
teacher runs in eval mode without gradients, under the student's autocast, on the student's
(augmented) input, so at the student's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import sha256_file


@dataclass
class Teacher:
    model: nn.Module
    record: dict  # meta.json's "distill": the teacher's path, sha256, arch and the weight


def load_teacher(path: str | Path, weight: float, mean=None, std=None) -> Teacher:
    """The trained model directory ``path`` as a frozen teacher; a bad one is a ``UserError``
    naming ``--distill``. ``mean``/``std`` are the student's: the teacher must see the same input."""
    from edgeticket.models.store import load_model_dir

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"--distill {path}: no such directory; pass a trained model directory "
                        f"(a finetune output or a search level, with {paths.META} and {paths.MODEL}).")
    try:
        model, meta = load_model_dir(folder)
    except UserError as e:
        raise UserError(f"--distill {path}: not a trained model directory that loads ({str(e).rstrip('.')}).") from None
    if mean is not None and (tuple(meta["mean"]) != tuple(mean) or tuple(meta["std"]) != tuple(std)):
        raise UserError(f"--distill {path}: the teacher normalises its input with mean {meta['mean']} and std "
                        f"{meta['std']}, the student with {list(mean)} and {list(std)}; pick a teacher of the same "
                        "normalisation.")
    model.eval().requires_grad_(False)
    record = {"teacher": str(folder.resolve()), "sha256": sha256_file(folder / paths.MODEL), "arch": meta["arch"],
              "teacher_input_size": meta.get("input_size"), "weight": float(weight)}
    return Teacher(model, record)


def teacher_for(train_cfg, arch: str, out: str | Path | None = None) -> Teacher | None:
    """``train_cfg.distill`` loaded for a student of ``arch`` (its normalisation), or None. A
    teacher inside ``out`` (the folder the run writes) is refused: a run never writes its inputs."""
    if not train_cfg.distill:
        return None
    if out is not None:
        t, o = Path(train_cfg.distill).resolve(), Path(out).resolve()
        if t == o or o in t.parents:
            raise UserError(f"--distill {train_cfg.distill}: lies in --out {out}, which this run writes; "
                            "distil from a model directory outside it.")
    from edgeticket.models.registry import get_record

    rec = get_record(arch)
    return load_teacher(train_cfg.distill, train_cfg.distill_weight, rec.mean, rec.std)


def distill_l1(pred: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |student - teacher| over the pixels with ground truth (target > 0)."""
    valid = (target > 0).float()
    return ((pred.float() - teacher.float()).abs() * valid).sum() / valid.sum().clamp_min(1.0)


def check_same_teacher(old_meta: dict, record: dict, where: Path) -> None:
    """Resume keeps the teacher: a run started with another teacher (or other weights in it) is refused."""
    old = old_meta.get("distill")
    if old and old.get("sha256") != record["sha256"]:
        raise UserError(f"{where}: this run was distilled from {old.get('teacher')} (sha256 {old.get('sha256', '')[:12]}), "
                        f"whose weights are not those of {record['teacher']} now; resume with the same teacher, "
                        "or start over with --overwrite.")
