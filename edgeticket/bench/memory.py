"""What a bench will hold in memory, estimated before anything is allocated.

A batch of ``N`` images costs ONNX Runtime about ``N`` times the peak of the tensors alive at
once at batch 1 (its memory planner reuses a buffer once the last node that reads it has run),
plus the input and output, plus the frames being read (an RGB frame and its float32 depth at
full resolution). Every session holds its own weights. The peak of live tensors is computed
from the graph in its stored (topological) order with ONNX's shape inference, at batch 1; a
tensor whose shape is not known counts nothing, so the figure is a floor rather than a bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeticket.train.memory import available_bytes, gib

FRAME_BYTES = 640 * 480 * (3 + 4)  # an RGB frame and its float32 depth, as the test split is read
HEADROOM = 1.25  # ORT's arena rounds allocations up; the machine needs some memory for itself


def _bytes(vi, elem_size: dict[int, int]) -> int:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return 0
    n = 1
    for d in t.shape.dim:
        n *= d.dim_value if d.dim_value > 0 else 1  # the batch (or an unknown axis) counts at 1
    return n * elem_size.get(t.elem_type, 4)


def activation_peak_bytes(path: str | Path) -> tuple[int, int]:
    """(peak bytes of tensors alive at once at batch 1, bytes of the initializers)."""
    import onnx
    from onnx import helper, shape_inference

    model = onnx.load(str(path))
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # a graph onnx cannot infer: count what is declared
        pass
    g = model.graph
    elem_size = {t: np.dtype(helper.tensor_dtype_to_np_dtype(t)).itemsize
                 for t in (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13)}
    size = {vi.name: _bytes(vi, elem_size) for vi in [*g.value_info, *g.input, *g.output]}
    weights = sum(int(np.prod(t.dims)) * elem_size.get(t.data_type, 4) for t in g.initializer)
    inits = {t.name for t in g.initializer}
    last_use: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            last_use[name] = i
    outputs = {o.name for o in g.output}
    live = {i.name: size.get(i.name, 0) for i in g.input if i.name not in inits}
    peak = sum(live.values())
    for i, node in enumerate(g.node):
        for name in node.output:
            live[name] = size.get(name, 0)
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= i and name not in outputs:
                del live[name]
    return peak, weights


def bench_estimate(paths: list[str], batch: int, sessions: int) -> dict:
    """Bytes the bench needs at its peak: every model's sessions' weights, and one batch through
    the largest model with the frames it is read from."""
    per = [activation_peak_bytes(p) for p in paths]
    weights = sum(w for _, w in per) * (sessions + 1)  # the timed sessions and the evaluation one
    batch_bytes = max(a for a, _ in per) * batch + FRAME_BYTES * batch
    return {"weights": weights, "batch": batch_bytes, "total": int((weights + batch_bytes) * HEADROOM)}


def check_bench_memory(paths: list[str], batch: int, sessions: int) -> dict:
    """The estimate; refused (``UserError``) when it exceeds the memory the machine has free."""
    from edgeticket.errors import UserError

    est = bench_estimate(paths, batch, sessions)
    free = available_bytes()
    if free is not None and est["total"] > free:
        raise UserError(f"--batch-size {batch}: the bench would need about {gib(est['total'])} (a batch through the "
                        f"largest model {gib(est['batch'])}, the weights of {sessions + 1} sessions per model "
                        f"{gib(est['weights'])}) and this machine has {gib(free)} free; pass a smaller --batch-size "
                        "or fewer --sessions.")
    return {**est, "available": free}
