"""The model registry: keyword-only builders over one private builder per family, one record each.

Two families: ``fcrn`` (a ResNet encoder and up-projections, ``models/fcrn.py``) and ``fastdepth``
(MobileNetV2 and NNConv5, ``models/fastdepth.py``), the efficient baseline tickets are set against.

``ModelRecord`` carries what a deployer needs to use a model (input size, mean/std) and its
cost (MACs at the default input size, tested against the counter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from edgeticket.data.geometry import DEFAULT_INPUT_SIZE
from edgeticket.errors import UserError
from edgeticket.hparams import InputSize
from edgeticket.models.fcrn import FCRN, ResNetEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelRecord:
    name: str
    block: type | None  # FCRN's ResNet block; None for the other families
    layers: tuple[int, ...]
    width: int
    decoder_widths: tuple[int, int, int, int, int]
    torchvision_arch: str | None  # the ImageNet model whose weights fit the encoder
    input_size: InputSize = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    macs: int = 0  # one image at input_size, fast decoder; see tests/test_models.py
    meta: dict = field(default_factory=dict)
    family: str = "fcrn"
    macs_at: tuple[tuple[InputSize, int], ...] = ()  # MACs pinned at other input sizes, tested too


_MODELS: dict[str, ModelRecord] = {}
_BUILDERS: dict[str, Callable[..., FCRN]] = {}


def register_model(record: ModelRecord):
    def wrap(fn: Callable[..., FCRN]) -> Callable[..., FCRN]:
        _MODELS[record.name] = record
        _BUILDERS[record.name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_record(name: str) -> ModelRecord:
    if name not in _MODELS:
        raise UserError(f"--arch {name!r} is not a known model; choose one of {', '.join(list_models())}.")
    return _MODELS[name]


def build_model(name: str, **kwargs) -> FCRN:
    """Build ``name``; ``None`` keyword arguments are dropped so defaults live in one place."""
    get_record(name)
    return _BUILDERS[name](**{k: v for k, v in kwargs.items() if v is not None})


def _fcrn(record: ModelRecord, *, weights_backbone: str | None = None, fast: bool = True, progress: bool = True) -> FCRN:
    encoder = ResNetEncoder(record.block, record.layers, record.width)
    model = FCRN(encoder, record.decoder_widths, fast=fast)
    if weights_backbone not in (None, "none"):
        from edgeticket.models.pretrained import load_backbone

        load_backbone(model, record, weights_backbone, progress=progress)
    return model


_R50 = ModelRecord("fcrn_resnet50", Bottleneck, (3, 4, 6, 3), 64, (1024, 512, 256, 128, 64), "resnet50", macs=17_566_278_400)
_R34 = ModelRecord("fcrn_resnet34", BasicBlock, (3, 4, 6, 3), 64, (256, 128, 64, 32, 16), "resnet34", macs=6_073_890_048)
_R18 = ModelRecord("fcrn_resnet18", BasicBlock, (2, 2, 2, 2), 64, (256, 128, 64, 32, 16), "resnet18", macs=3_380_443_904)
_TINY = ModelRecord("fcrn_tiny", BasicBlock, (2, 2, 2, 2), 16, (64, 32, 16, 8, 4), None, macs=243_661_568)


def _builder(record: ModelRecord, doc: str) -> Callable[..., FCRN]:
    """A keyword-only builder for ``record``, registered under its name (torchvision's style)."""

    def build(*, weights_backbone: str | None = None, fast: bool = True, progress: bool = True) -> FCRN:
        return _fcrn(record, weights_backbone=weights_backbone, fast=fast, progress=progress)

    build.__name__ = build.__qualname__ = record.name
    build.__doc__ = doc
    return register_model(record)(build)


fcrn_resnet50 = _builder(_R50, "FCRN-ResNet50 (Laina et al. 2016): 63.6 M parameters.")
fcrn_resnet34 = _builder(_R34, "FCRN on ResNet-34, with the narrower decoder of the BasicBlock ResNets.")
fcrn_resnet18 = _builder(_R18, "FCRN on ResNet-18, with the narrower decoder of the BasicBlock ResNets.")
fcrn_tiny = _builder(_TINY, "ResNet-18's structure and module names at a quarter of its widths, for tests.")


# FastDepth's input is 224x224; 228x304 is FCRN's (and the data's default), pinned as well.
_FASTDEPTH = ModelRecord("fastdepth_mobilenet_v2", None, (), 32, (96, 32, 24, 16, 16), "mobilenet_v2",
                         input_size=InputSize(224, 224), macs=329_044_800, family="fastdepth",
                         macs_at=((InputSize(228, 304), 484_813_264),))


@register_model(_FASTDEPTH)
def fastdepth_mobilenet_v2(*, weights_backbone: str | None = None, progress: bool = True) -> nn.Module:
    """FastDepth (Wofk et al. 2019) on torchvision's MobileNetV2: NNConv5 decoder, additive skips."""
    from edgeticket.models.fastdepth import FastDepth, MobileNetV2Encoder

    model = FastDepth(MobileNetV2Encoder(), _FASTDEPTH.decoder_widths)
    if weights_backbone not in (None, "none"):
        from edgeticket.models.pretrained import load_backbone

        load_backbone(model, _FASTDEPTH, weights_backbone, progress=progress)
    return model
