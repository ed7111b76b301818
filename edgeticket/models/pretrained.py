"""Pretrained encoder weights: torchvision's IMAGENET1K_V1 (or V2), a ResNet/MobileNetV2 state dict, or none.

``imagenet`` goes through torchvision's weights API and the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). Chen et al.'s
ImageNet tickets were found on these weights; FCRN's authors used He et al.'s Caffe ResNet-50.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from edgeticket.errors import UserError
from edgeticket.fsio import load_torch

IMAGENET_SPECS = ("imagenet", "imagenet:v1", "imagenet:v2")  # imagenet is IMAGENET1K_V1


def _weights_enum(arch: str, spec: str = "imagenet"):
    from torchvision import models as tv

    enum = {"resnet18": tv.ResNet18_Weights, "resnet34": tv.ResNet34_Weights, "resnet50": tv.ResNet50_Weights,
            "mobilenet_v2": tv.MobileNet_V2_Weights}[arch]
    tag = "IMAGENET1K_V2" if spec == "imagenet:v2" else "IMAGENET1K_V1"
    if not hasattr(enum, tag):
        raise UserError(f"--pretrained {spec}: torchvision has no {tag} weights for {arch}; use --pretrained imagenet.")
    return getattr(enum, tag)


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_state_dict(arch: str, progress: bool = True, spec: str = "imagenet") -> dict[str, torch.Tensor]:
    weights = _weights_enum(arch, spec)
    filename = os.path.basename(weights.url)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except (URLError, OSError, RuntimeError) as e:
        cached = hub_checkpoint_dir() / filename
        if cached.exists() and "hash" in str(e).lower():
            raise UserError(f"{cached}: fails torchvision's hash check; delete it and fetch {weights.url} again.") from None
        raise UserError(
            f"--pretrained imagenet: cannot download {weights.url} ({_reason(e)}); "
            f"put {filename} into {hub_checkpoint_dir()}/ or pass --pretrained PATH."
        ) from None


def _reason(e: Exception) -> str:
    r = getattr(e, "reason", None) or str(e) or type(e).__name__
    return str(r).splitlines()[0]


def read_resnet_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ResNet state dict from a file: plain, or under 'state_dict'/'model', with or without 'module.'."""
    path = Path(path)
    sd = load_torch(path, what="weights")
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"--pretrained {path}: not a state dict of tensors.")
    return {k.removeprefix("module.").removeprefix("encoder."): v for k, v in sd.items()}


def load_backbone(model: nn.Module, record, spec: str, progress: bool = True) -> dict:
    """Load ``spec`` ('imagenet' or a path) into ``model.encoder``; return provenance."""
    if spec in IMAGENET_SPECS:
        if record.torchvision_arch is None:
            raise UserError(f"--pretrained {spec}: {record.name} has no ImageNet weights; use --pretrained none or PATH.")
        sd = imagenet_state_dict(record.torchvision_arch, progress, spec)
        source = _weights_enum(record.torchvision_arch, spec).url
    else:
        sd = read_resnet_state_dict(spec)
        source = str(spec)
    sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "classifier."))}  # the ImageNet classifier
    own = model.encoder.state_dict()
    missing = [k for k in own if k not in sd]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = (f"missing {missing[:3]}" if missing else "") + (f" wrong shapes {wrong[:3]}" if wrong else "")
        raise UserError(f"--pretrained {spec}: does not fit {record.name}'s encoder ({what.strip()}).")
    model.encoder.load_state_dict({k: sd[k] for k in own})
    return {"pretrained": spec, "pretrained_source": source}
