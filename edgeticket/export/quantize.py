"""Static QDQ INT8 with onnxruntime.quantization, calibrated on the prepared training split.

Per-channel weights (QInt8), QUInt8 activations, ``quant_pre_process`` first. Calibration is
bounded in memory: without a bound it holds every intermediate tensor of every image (about
560 MB an image for FCRN-ResNet50), so ranges are collected in strides of ``stride`` images
(``CalibStridedMinMax``) through a reader with ``__len__`` and ``set_range``. The min/max of
each stride are merged, which gives the same ranges as one pass over all images (tested).
``CalibMaxIntermediateOutputs`` is not used: in onnxruntime 1.31 it drops what it collected.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgeticket.data.augment import to_input
from edgeticket.data.dataset import PreparedData
from edgeticket.errors import UserError
from edgeticket.export.onnx_export import set_metadata
from edgeticket.fsio import atomic_path

try:
    from onnxruntime.quantization import CalibrationDataReader
except ImportError:  # pragma: no cover - onnxruntime is a hard dependency
    CalibrationDataReader = object


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed images one at a time; ``set_range`` selects a stride of them."""

    def __init__(self, images: np.ndarray, input_name: str = "input"):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.input_name = input_name
        self.set_range(0, len(self.images))

    def __len__(self) -> int:
        return len(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._order = iter(range(start_index, min(end_index, len(self.images))))

    def get_next(self):
        i = next(self._order, None)
        return None if i is None else {self.input_name: self.images[i:i + 1]}

    def rewind(self) -> None:
        self.set_range(0, len(self.images))


def calibration_images(data: PreparedData, n: int, input_size: tuple[int, int], mean, std, seed: int = 0) -> np.ndarray:
    """``n`` training images (a seeded sample), preprocessed as the model expects."""
    if tuple(data.input_size) != tuple(input_size):
        raise UserError(
            f"--data {data.root}: calibration images are {data.input_size} but the model takes "
            f"{input_size}; pass data prepared at the model's input size."
        )
    train = data.load("train")
    if len(train) == 0:
        raise UserError(f"--data {data.root}: the training split is empty; INT8 calibration needs training images.")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: min(n, len(train))]
    return to_input(train.rgb[idx.sort().values], mean, std).numpy()


def vnni_available() -> bool:
    """x86 CPUs with VNNI accumulate int8 products without saturation (ORT's guidance)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "vnni" in flags or "aarch64" in os.uname().machine


def quantize_int8(fp32_path: str | Path, out_path: str | Path, images: np.ndarray, metadata: dict[str, str],
                  stride: int = 8, per_channel: bool = True, reduce_range: bool | None = None,
                  input_name: str = "input") -> dict:
    """Write a QDQ INT8 copy of ``fp32_path`` to ``out_path`` (atomically), its ``metadata_props``
    set to ``metadata``; return its settings."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    n = len(images)
    stride = max(1, min(stride, n))
    n -= n % stride  # the strided calibration needs a multiple of the stride
    reduce_range = (not vnni_available()) if reduce_range is None else reduce_range
    reader = ArrayCalibrationReader(images[:n], input_name)
    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        q = Path(d) / "int8.onnx"
        quantize_static(
            str(pre), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            extra_options={"CalibStridedMinMax": stride},
        )
        proto = onnx.load(str(q))
        set_metadata(proto, metadata)
        with atomic_path(out_path) as tmp:
            onnx.save_model(proto, str(tmp))
    settings = {"format": "QDQ", "per_channel": per_channel, "activations": "QUInt8", "weights": "QInt8",
                "reduce_range": reduce_range, "calibration_images": n, "stride": stride}
    if n < len(images):
        settings["note"] = (f"calibrated on {n} of the {len(images)} images: the strided calibration needs a "
                            f"multiple of {stride}")
    return settings
