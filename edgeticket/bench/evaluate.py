"""Accuracy of ONNX models with ONNX Runtime on a dataset folder's test split.

The ground truth is read at full resolution (480x640) from the dataset itself, never from the
resized training cache. Each frame is resized whole to each model's own input size (models of
different input sizes can be benched together: the metrics are at ground-truth resolution) by the same
function ``data prepare`` uses, normalised with the model's own mean/std (from its metadata),
and the prediction is scored by the training code's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeticket.bench.config import BenchConfig
from edgeticket.data.augment import to_input
from edgeticket.data.geometry import resize_rgb
from edgeticket.data.nyu import open_with_split
from edgeticket.errors import UserError
from edgeticket.export.onnx_export import ort_session, read_metadata, run_ort
from edgeticket.hparams import InputSize
from edgeticket.models.card import ModelCard
from edgeticket.train.metrics import MetricAccumulator, upsample_to


@dataclass
class Preprocess:
    input_size: InputSize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "metadata" or "flags"


@dataclass
class OnnxModel:
    path: str  # as given on the command line
    card: ModelCard | None  # None for a model without edgeticket metadata
    pre: Preprocess
    bytes: int
    sess: object = field(repr=False, default=None)
    fixed_batch: int | None = None  # a model exported for one batch size only

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None or self.fixed_batch == len(x):
            return run_ort(self.sess, x)
        return np.concatenate([run_ort(self.sess, x[i:i + 1]) for i in range(len(x))])


def open_model(path: str, cfg: BenchConfig, provider: str = "CPUExecutionProvider") -> OnnxModel:
    """Open an ONNX file; preprocessing from its model card, or from the flags for a model without one."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such ONNX file.")
    try:
        meta = read_metadata(p)
        sess = ort_session(p, cfg.threads, provider, cfg.opt_level, cfg.spin)
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a loadable ONNX model ({msg[:160]}).") from None
    card = ModelCard.from_onnx_props(meta, f"{path}")
    if card is not None:
        pre = Preprocess(card.input_size, card.mean, card.std, "metadata")
    else:
        missing = [f for f, v in (("--input-size", cfg.input_size), ("--mean", cfg.mean), ("--std", cfg.std))
                   if v is None]
        if missing:
            raise UserError(f"{path}: has no edgeticket metadata; pass {', '.join(missing)} "
                            "(e.g. --input-size 228x304 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225).")
        pre = Preprocess(cfg.input_size, cfg.mean, cfg.std, "flags")
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise UserError(f"{path}: takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edgeticket feeds "
                        "one float32 NCHW image batch.")
    if inputs[0].type != "tensor(float)":
        raise UserError(f"{path}: its input {inputs[0].name!r} is {inputs[0].type}; edgeticket feeds float32 NCHW "
                        "images (tensor(float)).")
    out = sess.get_outputs()[0]
    if out.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
        raise UserError(f"{path}: its output {out.name!r} is {out.type}; edgeticket reads depth as floating point.")
    shape = inputs[0].shape
    if len(shape) != 4:
        raise UserError(f"{path}: takes a {len(shape)}-D input; edgeticket feeds NCHW images.")
    if all(isinstance(d, int) for d in shape[2:]) and tuple(shape[2:]) != tuple(pre.input_size):
        raise UserError(f"{path}: its input is {shape[2]}x{shape[3]} but its preprocessing says {pre.input_size}.")
    fixed = shape[0] if isinstance(shape[0], int) else None
    if fixed is not None and fixed != 1:
        raise UserError(f"{path}: takes a fixed batch of {fixed}; export it with a dynamic batch (or batch 1) to bench it.")
    return OnnxModel(path, card, pre, p.stat().st_size, sess, fixed)


def evaluate_models(models: list[OnnxModel], data: str | Path, batch_size: int = 8, limit: int | None = None,
                    progress: bool = True, keep_frames: int = 0) -> tuple[list[dict], dict]:
    """Metrics of every model over the test split; frames are read once and fed to all models.

    Returns one metrics dict per model, and ``panel``: the first ``keep_frames`` frames' RGB,
    ground truth and predictions, for the report's picture.
    """
    from edgeticket.progress import track

    source, split = open_with_split(data)
    idx = split.test if limit is None else split.test[:limit]
    if len(idx) == 0:
        raise UserError(f"--data {data}: the test split is empty; there is nothing to evaluate.")
    accs = [MetricAccumulator("cpu") for _ in models]
    panel = {"rgb": [], "gt": [], "pred": [[] for _ in models], "frames": []}
    batch: list[tuple[np.ndarray, np.ndarray, int]] = []

    def flush():
        gt = torch.from_numpy(np.stack([d for _, d, _ in batch]))[:, None]
        resized: dict[tuple[int, int], torch.Tensor] = {}  # each model at its own input size, resized once per size
        for k, m in enumerate(models):
            size = tuple(m.pre.input_size)
            if size not in resized:
                resized[size] = torch.from_numpy(np.stack([resize_rgb(r, size) for r, _, _ in batch])).permute(0, 3, 1, 2)
            x = to_input(resized[size], m.pre.mean, m.pre.std).numpy()
            pred = torch.from_numpy(m.run(x)).float()
            if pred.dim() != 4 or pred.shape[1] != 1:
                raise UserError(f"{m.path}: outputs shape {tuple(pred.shape)}; edgeticket expects depth N x 1 x h x w.")
            accs[k].update(pred, gt)
            need = keep_frames - len(panel["pred"][k])
            if need > 0:
                full = upsample_to(pred[:need], tuple(gt.shape[-2:])).clamp(1e-3, 10)
                panel["pred"][k].extend(full[:, 0].numpy())
        need = keep_frames - len(panel["rgb"])
        for r, d, f in batch[: max(need, 0)]:
            panel["rgb"].append(r)
            panel["gt"].append(d)
            panel["frames"].append(f)
        batch.clear()

    for i in track(idx, "bench: test frames", total=len(idx), enabled=progress):
        rgb, depth = source.read(int(i))
        batch.append((rgb, depth, source.frame_id(int(i))))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    source.close()
    return [a.compute() for a in accs], panel


__all__ = ["OnnxModel", "Preprocess", "evaluate_models", "open_model"]
