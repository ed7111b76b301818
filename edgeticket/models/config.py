"""Which model: the architecture and the weights its encoder starts from."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.hparams import Hparams, hfield


def _arch_names() -> tuple[str, ...]:
    from edgeticket.models.registry import list_models

    return tuple(list_models())


def _check_pretrained(value: str) -> str | None:
    return "give imagenet, none or the path of a ResNet state dict" if not value.strip() else None


@dataclass
class ModelConfig(Hparams):
    section = "model"

    arch: str = hfield("fcrn_resnet50", help="The model (see the registry: fcrn_resnet50, fcrn_resnet34, "
                       "fcrn_resnet18, fcrn_tiny, fastdepth_mobilenet_v2).", choices=_arch_names, panel="Model")
    pretrained: str = hfield("imagenet", help="imagenet (torchvision IMAGENET1K_V1 via the torch hub cache; imagenet:v2 "
                             "for IMAGENET1K_V2), none (random init) or PATH to the encoder's state dict.", check=_check_pretrained, panel="Model")
