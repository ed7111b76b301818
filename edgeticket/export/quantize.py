"""Static QDQ INT8 with onnxruntime.quantization, calibrated on the prepared training split.

Per-channel weights (QInt8), QUInt8 activations, ``quant_pre_process`` first. The depth head
(its conv, the final resize, the output) stays in fp32: a quantized output steps the depth and
clips it at the calibration maximum. ``reduce_range`` and the calibration method are settings;
``auto`` follows the export machine's VNNI and says so. Calibration is
bounded in memory: without a bound it holds every intermediate tensor of every image (about
560 MB an image for FCRN-ResNet50), so ranges are collected in strides of ``stride`` images
(``CalibStridedMinMax``) through a reader with ``__len__`` and ``set_range``. The min/max of
each stride are merged, which gives the same ranges as one pass over all images (tested).
``CalibMaxIntermediateOutputs`` is not used: in onnxruntime 1.31 it drops what it collected.
"""

from __future__ import annotations

import json
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
from edgeticket.models.card import ModelCard

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


def resolve_reduce_range(choice: str) -> tuple[bool, str]:
    """(reduce_range, why): ``auto`` follows the export machine, which need not be the deployment target."""
    if choice == "on":
        return True, "on (--reduce-range on)"
    if choice == "off":
        return False, "off (--reduce-range off)"
    vnni = vnni_available()
    return (not vnni), (f"{'off' if vnni else 'on'} (auto: the export machine "
                        f"{'has' if vnni else 'lacks'} VNNI; pass --reduce-range on|off for another target)")


def fp32_tail(proto) -> list[str]:
    """The nodes from the last convolution (the depth head) to the output: walking back from the
    graph's outputs, every node up to and including the first Conv on each path."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    tail, seen, todo = [], set(), [o.name for o in proto.graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        tail.append(node.name)
        if node.op_type != "Conv":
            todo.extend(i for i in node.input if i)
    if not any(n.op_type == "Conv" and n.name in seen for n in proto.graph.node):
        raise RuntimeError("the model has no Conv on the way to its output; cannot find the depth head")
    return tail


CALIB_METHODS = ("minmax", "percentile", "entropy")


def quantize_int8(fp32_path: str | Path, out_path: str | Path, images: np.ndarray, card: ModelCard,
                  stride: int = 8, per_channel: bool = True, reduce_range: str = "auto", calib_method: str = "minmax",
                  fp32_head: bool = True, input_name: str = "input") -> dict:
    """Write a QDQ INT8 copy of ``fp32_path`` to ``out_path`` (atomically), described by ``card``
    with the calibration settings as ``edgeticket.int8.calibration``; return those settings.

    With ``fp32_head`` the head conv, the final resize and the output stay in fp32 (excluded by
    node name), so the depth is neither stepped nor clipped at the calibration maximum.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    n = len(images)
    stride = max(1, min(stride, n))
    n -= n % stride  # the strided calibration needs a multiple of the stride
    rr, rr_why = resolve_reduce_range(reduce_range)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calib_method]
    reader = ArrayCalibrationReader(images[:n], input_name)
    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        excluded = fp32_tail(onnx.load(str(pre))) if fp32_head else []
        q = Path(d) / "int8.onnx"
        quantize_static(
            str(pre), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            reduce_range=rr, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded, calibrate_method=method,
            extra_options={"CalibStridedMinMax": stride},
        )
        settings = {"format": "QDQ", "per_channel": per_channel, "activations": "QUInt8", "weights": "QInt8",
                    "reduce_range": rr, "reduce_range_from": rr_why, "calib_method": calib_method,
                    "calibration_images": n, "calibration_split": "train", "stride": stride,
                    "fp32_nodes": excluded}
        if calib_method == "percentile":
            settings["percentile"] = 99.999  # onnxruntime's default
        proto = onnx.load(str(q))
        card = card.replace(precision="int8-qdq", int8_calibration=json.dumps(settings, sort_keys=True))
        set_metadata(proto, card.to_onnx_props(), card.doc_string())
        with atomic_path(out_path) as tmp:
            onnx.save_model(proto, str(tmp))
    if n < len(images):
        settings["note"] = (f"calibrated on {n} of the {len(images)} images: the strided calibration needs a "
                            f"multiple of {stride}")
    return settings
