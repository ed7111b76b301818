"""Importing published tickets: mask dicts and ``torch.nn.utils.prune`` checkpoints.

Read:
- plain dicts ``{name.weight_mask: tensor}``, as CV_LTH_Pre-training ships its ImageNet masks;
- checkpoints holding ``*.weight_orig`` / ``*.weight_mask`` (``torch.nn.utils.prune``), under
  ``state_dict`` (or ``model``) or at top level, with or without a ``module.`` prefix,
  ``.pth.tar`` included.
The masks map onto the FCRN encoder by prefix (``layer1.0.conv1.weight`` ->
``encoder.layer1.0.conv1.weight``, downsample convs included); the decoder stays dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, sha256_file, versions, write_json
from edgeticket.models.registry import build_model
from edgeticket.tickets.mask import Mask

MASK_SUFFIX = "_mask"
CLASSIFIER_PREFIXES = ("fc.",)


def read_mask_entries(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """{'layer1.0.conv1.weight': mask tensor} from any of the supported layouts."""
    path = Path(path)
    raw = load_torch(path, allow_pickle=allow_pickle, what="ticket",
                     pickle_hint="pass --allow-pickle only if you trust this file")  # tickets import has it
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model", "mask"):
            if key in raw and isinstance(raw[key], Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping):
        raise UserError(f"{path}: not a dict of masks or a state dict; cannot import it as a ticket.")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.endswith(MASK_SUFFIX):
            continue
        name = key.removeprefix("module.")[: -len(MASK_SUFFIX)]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: {key} is {type(value).__name__}, not a tensor.")
        out[name] = value
    if not out:
        raise UserError(f"{path}: holds no '*.weight_mask' entries; it is not a pruned checkpoint or a mask dict.")
    return out


def read_ticket(path: str | Path, arch: str, allow_pickle: bool = False) -> tuple[Mask, list[str]]:
    """The FCRN mask for an ImageNet ResNet ticket; every misfit is an error naming its key."""
    path = Path(path)
    entries = read_mask_entries(path, allow_pickle)
    model = build_model(arch)
    params = dict(model.named_parameters())
    notes, mask = [], Mask()
    for name, value in sorted(entries.items()):
        if name.startswith(CLASSIFIER_PREFIXES):
            notes.append(f"{name}: the ImageNet classifier has no place in FCRN; ignored")
            continue
        target = f"encoder.{name}"
        if target not in params:
            raise UserError(f"{path}: {name}_mask names no layer of {arch}'s encoder; is the ticket for another architecture?")
        if tuple(value.shape) != tuple(params[target].shape):
            raise UserError(f"{path}: {name}_mask has shape {tuple(value.shape)}, but {arch}'s {target} is "
                            f"{tuple(params[target].shape)}; is the ticket for another architecture?")
        if value.dtype != torch.bool and not ((value == 0) | (value == 1)).all():
            raise UserError(f"{path}: {name}_mask holds values other than 0 and 1; a mask must be binary.")
        mask[target] = value.bool()
    expected = [n for n, p in params.items() if n.startswith("encoder.") and p.dim() == 4 and n != "encoder.conv1.weight"]
    missing = [n for n in expected if n not in mask]
    if missing:
        raise UserError(f"{path}: has no mask for {missing[0].removeprefix('encoder.')}"
                        f"{f' and {len(missing) - 1} more layers' if len(missing) > 1 else ''}; the ticket is incomplete.")
    return mask, notes


def import_ticket(path: str | Path, out: str | Path, *, arch: str = "fcrn_resnet50",
                  allow_pickle: bool = False, overwrite: bool = False) -> tuple[Mask, list[str]]:
    """Import a published ImageNet ticket into the folder ``out``: ``mask.pt``, ``meta.json``
    (where it came from, its sha256) and ``sparsity.json``; ``out`` can then be passed to
    ``finetune(mask=Mask.load(out))`` or ``edgeticket finetune --mask``.

    ``out`` is empty, or an imported ticket of the same file and arch (rewritten), or, with
    ``overwrite``, another imported ticket; any other folder is refused."""
    from edgeticket.runs import claimed

    path, out = Path(path), Path(out)
    if not path.is_file():
        raise UserError(f"{path}: no such ticket file.")
    sha = sha256_file(path)
    with claimed(out, "ticket", {"source_sha256": sha, "arch": arch}, overwrite=overwrite, resume_option=None,
                 inputs={"ticket file": path}):  # --out is checked before the file is read
        mask, notes = read_ticket(path, arch, allow_pickle)
        mask.save(out / paths.MASK)
        write_json(out / paths.META, {"arch": arch, "criterion": "imported", "level": None, "branch": "",
                                      "imported_from": str(path), "source_sha256": sha, "notes": notes,
                                      "versions": versions()})
        from edgeticket.tickets.sparsity import sparsity_report

        write_json(out / paths.SPARSITY, sparsity_report(mask))  # unstructured: effective = the mask's
    return Mask.load(out / paths.MASK), notes
