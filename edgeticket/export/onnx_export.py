"""ONNX export with torch's dynamo exporter, the checker, metadata, and ORT parity.

One file (no ``.onnx.data`` beside it), opset 18, a dynamic batch dimension and the input size
fixed from ``meta.json``. The model's ``metadata_props`` carry everything a deployer needs;
the bench reads preprocessing, MACs, params and sparsity only from there.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeticket.fsio import atomic_path

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "depth"


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int], metadata: dict[str, str],
                doc_string: str | None = None) -> None:
    """Export ``model`` (eval, CPU, fp32) to ``path`` atomically with ``metadata`` (``ModelCard.to_onnx_props()``)."""
    import onnx

    model = model.cpu().eval()
    x = torch.zeros(2, 3, *input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}}, opset_version=OPSET, external_data=False, verbose=False,
        )
    proto = program.model_proto
    set_metadata(proto, metadata, doc_string)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    stray = Path(str(path) + ".data")
    if stray.exists():
        raise RuntimeError(f"{stray}: the exporter wrote external data; edgeticket exports one file")


class _quiet:
    """The exporter prints progress lines on stdout; keep the CLI's output ours."""

    def __enter__(self):
        import contextlib

        self._ctx = contextlib.redirect_stdout(io.StringIO())
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def set_metadata(proto, metadata: dict[str, str], doc_string: str | None = None) -> None:
    """Replace the model's ``metadata_props`` with ``metadata`` (full keys); the producer is
    edgeticket, and ``doc_string`` (``ModelCard.doc_string()``) says what goes in and comes out."""
    from edgeticket import __version__

    proto.producer_name, proto.producer_version = "edgeticket", __version__
    if doc_string is not None:
        proto.doc_string = doc_string
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = k
        entry.value = str(v)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (full keys); ``ModelCard.from_onnx_props`` reads them."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


def ort_session(path: str | Path | bytes, threads: int | None = None, provider: str = "CPUExecutionProvider",
                opt_level: str = "all", spin: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=[provider])


def run_ort(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def count_unfused_batchnorm(path: str | Path) -> int:
    """BatchNormalization nodes left after ORT's own optimisations."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = str(Path(d) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath)
    return sum(1 for n in opt.graph.node if n.op_type == "BatchNormalization")
