"""What the tests share besides fixtures: tiny settings, and runs built from them.

Everything is tiny (fcrn_tiny, 48x64 inputs) so the suite runs in minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeticket.data.config import DataConfig
from edgeticket.hparams import InputSize
from edgeticket.models.config import ModelConfig
from edgeticket.tickets.config import SearchConfig
from edgeticket.train.config import FinetuneConfig, TrainConfig

SHARED_NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu"
SIZE = InputSize(48, 64)


def tiny_train_config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=4, lr=0.01, eval_batch_size=8, warmup_epochs=0.0)
    base.update(kw)
    return TrainConfig(**base)


def tiny_finetune_config(train: TrainConfig | None = None, arch: str = "fcrn_tiny", pretrained: str = "none",
                         input_size=None, val_fraction: float = 0.1) -> FinetuneConfig:
    return FinetuneConfig(model=ModelConfig(arch=arch, pretrained=pretrained),
                          data=DataConfig(input_size=input_size, val_fraction=val_fraction),
                          train=train or tiny_train_config())


def tiny_search_config(train: TrainConfig | None = None, arch: str = "fcrn_tiny", pretrained: str = "none",
                       input_size=None, val_fraction: float = 0.1, **search) -> SearchConfig:
    return SearchConfig(model=ModelConfig(arch=arch, pretrained=pretrained),
                        data=DataConfig(input_size=input_size, val_fraction=val_fraction),
                        train=train or tiny_train_config(epochs=1), **search)


def shared_nyu() -> Path:
    if not (SHARED_NYU / "test_first10").is_dir():
        pytest.skip("../shared/data/nyu is not present in this checkout")
    return SHARED_NYU


def onnx_props(path) -> dict[str, str]:
    """An ONNX file's edgeticket metadata, keys without the ``edgeticket.`` prefix, as stored (text)."""
    from edgeticket.export.onnx_export import read_metadata

    return {k.removeprefix("edgeticket."): v for k, v in read_metadata(path).items()}
