"""Scoring a PyTorch model on a prepared split, at full ground-truth resolution."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from edgeticket.data.augment import to_input
from edgeticket.data.dataset import PreparedData
from edgeticket.train.metrics import MetricAccumulator


@torch.no_grad()
def score_split(predict: Callable[[torch.Tensor], torch.Tensor], data: PreparedData, split: str, batch_size: int,
                mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu",
                limit: int | None = None) -> dict[str, float]:
    """Metrics of any depth predictor (PyTorch or ONNX Runtime) over a split, per image then averaged."""
    acc = MetricAccumulator(device)
    for rgb, gt in data.iter_full(split, batch_size, limit):
        acc.update(predict(to_input(rgb.to(device), mean, std)).float(), gt.to(device))
    return acc.compute()


@torch.no_grad()
def evaluate(model: nn.Module, data: PreparedData, split: str, device: torch.device | str, batch_size: int,
             mean: Sequence[float], std: Sequence[float], channels_last: bool = False,
             limit: int | None = None) -> dict[str, float]:
    """Metrics of ``model`` over a whole split, in fp32."""
    was_training = model.training
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = score_split(lambda x: model(x.contiguous(memory_format=fmt)), data, split, batch_size, mean, std, device,
                      limit)
    model.train(was_training)
    return out


@torch.no_grad()
def mean_depth_baseline(data: PreparedData, split: str = "val") -> dict[str, float]:
    """Metrics of predicting the training split's mean depth everywhere: the bar to beat."""
    train = data.load("train").depth
    valid = train > 0
    mean_depth = float(train[valid].mean())
    acc = MetricAccumulator("cpu")
    for _rgb, gt in data.iter_full(split, 16):
        acc.update(torch.full((gt.shape[0], 1, 8, 8), mean_depth), gt)
    out = acc.compute()
    out["mean_depth"] = mean_depth
    return out
