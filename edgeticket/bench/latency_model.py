"""A latency model of a network: what a channel ticket would cost in ONNX Runtime, before it exists.

Built as HALP (Shen et al., NeurIPS 2022) builds its look-up table, measured as the bench
measures (same provider, threads and graph optimisation):

1. **Per-conv table.** Every ``Conv2d`` of the model is one shape: kernel, stride, padding,
   dilation, whether it is depthwise, and the spatial size it sees at the input size. Each
   distinct shape is measured alone (a one-node ONNX graph with random weights and a bias, as
   BN folding leaves it) on a grid of input x output widths, 1/8 to 1 of its full width
   (depthwise convs: one axis). A conv of any width is interpolated bilinearly between grid
   points (below the smallest, linearly towards zero).
2. **What does not shrink, and what the table misses.** The whole dense model and the model
   pruned uniformly to four effective densities (``CALIBRATION_DENSITY``: one channel fraction
   for every prunable group, L1-ranked channels) are exported and timed in interleaved rounds (``bench.latency.interleaved``), and
   ``a + b * sum(convs) ** p`` is fitted through the five points (least squares on relative
   error, ``a >= 0``, ``p`` in ``P_RANGE``). ``a`` holds the fixed cost (session overhead, the
   resize, memory moves that do not scale with channels); ``b`` and ``p`` the ratio of a conv
   inside the graph (fused with its ReLU, caches warm from its neighbours) to a conv measured
   alone, and how that ratio changes with width. The first version fitted ``a + b * sum``
   through the dense and half models only: on FCRN-ResNet50 at 228x304 it put 37 ms in ``a``
   where the narrowest ticket measured 8 ms, and called a 4x target unreachable. Through the
   five points the same model fits with ``a = 0``, ``b = 1.48``, ``p = 0.93``, each point within
   4.9% (BENCHMARKS.md). The dense latency that speed-ups are stated against is the fit's own dense value, so
   that a predicted speed-up is a ratio of two predictions.

The table is cached per machine (CPU model), onnxruntime version, provider, threads and
optimisation level under the user's cache folder (``$EDGETICKET_CACHE`` or
``$XDG_CACHE_HOME/edgeticket``), one JSON file with its provenance; ``remeasure=True``
rebuilds it. Accuracy against the bench: ``benchmarks/latency_model.py`` and BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeticket.fsio import write_json

GRID = (0.125, 0.25, 0.5, 0.75, 1.0)
TABLE_VERSION = 2
FIT_VERSION = 2  # a + b * sum ** p through five uniform widths (1: a + b * sum through dense and half)
SLOW_MS, SLOW_BUDGET_MS = 10.0, 150.0
CALIBRATION_DENSITY = (0.6, 0.3, 0.12, 0.04)  # effective densities of the calibration models, besides dense
P_RANGE = (0.7, 1.6)


@dataclass(frozen=True)
class ConvShape:
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    depthwise: bool
    hw: tuple[int, int]  # input spatial size

    @property
    def key(self) -> str:
        k = self
        return (f"{'dw' if k.depthwise else 'c'}{k.cin}x{k.cout}_k{k.kernel[0]}x{k.kernel[1]}_s{k.stride[0]}x{k.stride[1]}"
                f"_p{k.padding[0]}x{k.padding[1]}_d{k.dilation[0]}x{k.dilation[1]}_at{k.hw[0]}x{k.hw[1]}")

    def grid(self) -> tuple[list[int], list[int]]:
        ins = sorted({max(1, round(self.cin * f)) for f in GRID})
        outs = ins if self.depthwise else sorted({max(1, round(self.cout * f)) for f in GRID})
        return ins, outs


@torch.no_grad()
def conv_shapes(model: nn.Module, input_size: tuple[int, int]) -> dict[str, ConvShape]:
    """{module name: ConvShape} of every Conv2d, with the spatial size it sees at ``input_size``."""
    shapes, hooks = {}, []

    def hook(name):
        def fn(mod, inp, _out):
            dw = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
            if mod.groups > 1 and not dw:
                raise ValueError(f"{name}: grouped convolutions other than depthwise are not modelled")
            pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)
            shapes[name] = ConvShape(mod.in_channels, mod.out_channels, tuple(mod.kernel_size), tuple(mod.stride),
                                     tuple(pad), tuple(mod.dilation), dw, tuple(inp[0].shape[-2:]))
        return fn

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return shapes


# -- measuring ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """How the table is measured: the bench's provider, threads and optimisation level."""

    provider: str = "cpu"
    threads: int | None = None
    opt_level: str = "all"
    runs: int = 15
    warmup: int = 3

    def ort_provider(self) -> str:
        return "CUDAExecutionProvider" if self.provider == "cuda" else "CPUExecutionProvider"

    def resolved_threads(self) -> int:
        from edgeticket.bench.latency import physical_cores

        return self.threads or physical_cores()


def _conv_graph(s: ConvShape, cin: int, cout: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    groups = cin if s.depthwise else 1
    if s.depthwise:
        cout = cin
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin // groups, *s.kernel)).astype(np.float32) * 0.01
    b = np.zeros(cout, np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(s.kernel), strides=list(s.stride),
                            pads=[s.padding[0], s.padding[1], s.padding[0], s.padding[1]],
                            dilations=list(s.dilation), group=groups)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, *s.hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def time_onnx(model: bytes | str | Path, input_shape: tuple[int, ...], timing: Timing) -> float:
    """Median milliseconds of ``session.run`` after warm-up: ``timing.runs`` runs, fewer (at least 3,
    about ``SLOW_BUDGET_MS`` in all) for a point slower than ``SLOW_MS``, so that big tables stay quick."""
    from edgeticket.export.onnx_export import ort_session

    sess = ort_session(model, timing.resolved_threads(), timing.ort_provider(), timing.opt_level)
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}
    t0 = time.perf_counter()
    sess.run(None, feed)  # the first run allocates
    first = (time.perf_counter() - t0) * 1000.0
    slow = first > SLOW_MS
    for _ in range(0 if slow else max(0, timing.warmup - 1)):
        sess.run(None, feed)
    n = max(3, min(timing.runs, int(SLOW_BUDGET_MS / max(first, 1e-3)))) if slow else timing.runs
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def measure_conv(s: ConvShape, timing: Timing) -> dict:
    """The grid's milliseconds, less the cost of a ``session.run`` itself (a 1x1 conv of one channel).

    Alone, every conv pays the call's overhead; inside the model there is one call for all of
    them, which the fit's ``a`` holds.
    """
    ins, outs = s.grid()
    one = ConvShape(1, 1, (1, 1), (1, 1), (0, 0), (1, 1), False, s.hw)
    call = time_onnx(_conv_graph(one, 1, 1), (1, 1, *s.hw), timing)
    if s.depthwise:
        ms = [[time_onnx(_conv_graph(s, c, c), (1, c, *s.hw), timing)] for c in ins]
    else:
        ms = [[time_onnx(_conv_graph(s, ci, co), (1, ci, *s.hw), timing) for co in outs] for ci in ins]
    ms = [[max(0.0, v - call) for v in row] for row in ms]
    return {"in": ins, "out": outs if not s.depthwise else [0], "ms": ms, "call_ms": call}


def interp_conv(entry: dict, cin: int, cout: int, depthwise: bool) -> float:
    """Bilinear in (in, out) between grid points; towards 0 below the first; linear beyond the last."""
    ins, ms = entry["in"], np.asarray(entry["ms"], dtype=np.float64)
    if depthwise:
        return float(max(0.0, _interp1(ins, ms[:, 0], cin)))
    outs = entry["out"]
    i0, i1, ti = _bracket(ins, cin)
    o0, o1, to = _bracket(outs, cout)
    v = ((1 - ti) * (1 - to) * ms[i0, o0] + ti * (1 - to) * ms[i1, o0]
         + (1 - ti) * to * ms[i0, o1] + ti * to * ms[i1, o1])
    if cin < ins[0]:
        v *= cin / ins[0]
    if cout < outs[0]:
        v *= cout / outs[0]
    return float(max(0.0, v))


def _bracket(xs: list[int], x: float) -> tuple[int, int, float]:
    if len(xs) == 1:
        return 0, 0, 0.0
    if x <= xs[0]:
        return 0, 0, 0.0
    for j in range(len(xs) - 1):
        if x <= xs[j + 1]:
            return j, j + 1, (x - xs[j]) / (xs[j + 1] - xs[j])
    j = len(xs) - 2
    return j, j + 1, (x - xs[j]) / (xs[j + 1] - xs[j])


def _interp1(xs: list[int], ys: np.ndarray, x: float) -> float:
    if x < xs[0]:
        return float(ys[0]) * x / xs[0]
    i0, i1, t = _bracket(xs, x)
    return float((1 - t) * ys[i0] + t * ys[i1])


# -- the model ---------------------------------------------------------------------------------------

@dataclass
class LatencyModel:
    """Predicted milliseconds of a model whose convs have given widths: ``a + b * sum(table) ** p``."""

    shapes: dict[str, ConvShape]
    table: dict[str, dict]
    a: float
    b: float
    dense_ms: float
    provenance: dict
    p: float = 1.0

    def conv_ms(self, name: str, cin: int, cout: int) -> float:
        s = self.shapes[name]
        if s.depthwise:  # compaction keeps a depthwise conv's input and output channels equal
            cin = cout = min(cin, cout)
        return interp_conv(self.table[s.key], cin, cout, s.depthwise)

    def conv_sum(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        widths = widths or {}
        return sum(self.conv_ms(n, *widths.get(n, (s.cin, s.cout))) for n, s in self.shapes.items())

    def predict(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        return self.a + self.b * self.conv_sum(widths) ** self.p

    @property
    def dense_predicted(self) -> float:
        return self.predict()


def cache_dir() -> Path:
    root = os.environ.get("EDGETICKET_CACHE")
    if root:
        return Path(root) / "latency"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "edgeticket" / "latency"


def machine_provenance(timing: Timing) -> dict:
    import onnxruntime as ort

    from edgeticket.bench.latency import cpu_model

    return {"cpu": cpu_model(), "onnxruntime": ort.__version__, "provider": timing.provider,
            "threads": timing.resolved_threads(), "opt_level": timing.opt_level, "version": TABLE_VERSION,
            "runs": timing.runs, "warmup": timing.warmup}


def cache_file(timing: Timing) -> Path:
    prov = machine_provenance(timing)
    key = hashlib.sha256(json.dumps({k: prov[k] for k in ("cpu", "onnxruntime", "provider", "threads", "opt_level",
                                                          "version")}, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"table-{key}.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if data.get("provenance", {}).get("version") == TABLE_VERSION else {}
    except (OSError, ValueError):
        return {}


def fit_latency(sums: list[float], ms: list[float]) -> tuple[float, float, float]:
    """``a, b, p`` of ``ms = a + b * sums ** p``: least squares on relative error, ``a >= 0``, the
    best ``p`` of a grid over ``P_RANGE`` (for each ``p`` the fit is linear in ``a, b``)."""
    x, y = np.asarray(sums, np.float64), np.asarray(ms, np.float64)
    w = 1.0 / y  # weights for relative error
    best = None
    for p in np.linspace(*P_RANGE, 91):
        xp = x ** p
        A = np.stack([np.ones_like(xp), xp], axis=1) * w[:, None]
        (a, b), *_ = np.linalg.lstsq(A, y * w, rcond=None)
        if a < 0 or b <= 0:
            a, b = 0.0, float(np.sum(xp * y * w * w) / np.sum((xp * w) ** 2))
        err = float(np.sum(((a + b * xp - y) * w) ** 2))
        if best is None or err < best[0]:
            best = (err, float(a), float(b), float(p))
    return best[1], best[2], best[3]


def build_latency_model(model: nn.Module, input_size: tuple[int, int], calibration: list[dict[str, tuple[int, int]]],
                        timing: Timing | None = None, *, model_key: str, remeasure: bool = False,
                        progress: bool = False) -> LatencyModel:
    """Measure (or read from the cache) the table for ``model`` at ``input_size`` and fit ``a, b, p``.

    ``calibration`` holds the alive widths of the model at each of ``CALIBRATION_DENSITY`` (the
    calibration points besides the dense model); ``model_key`` names the architecture and input
    size in the cache.
    """
    timing = timing or Timing()
    shapes = conv_shapes(model, input_size)
    path = cache_file(timing)
    data = {} if remeasure else _read_cache(path)
    table, fits = dict(data.get("convs", {})), dict(data.get("models", {}))
    t0 = time.perf_counter()
    todo = sorted({s.key: s for s in shapes.values() if s.key not in table}.values(), key=lambda s: s.key)
    for i, s in enumerate(todo):
        if progress:
            print(f"  latency table: {s.key} ({i + 1}/{len(todo)})", flush=True)
        table[s.key] = measure_conv(s, timing)
    old = fits.get(model_key, {})
    if remeasure or todo or old.get("fit_version") != FIT_VERSION or len(old.get("measured_ms", [])) != len(calibration) + 1:
        if progress:
            print(f"  latency calibration: the dense model and {len(calibration)} narrower ones", flush=True)
        fits[model_key] = {"fit_version": FIT_VERSION, "measured_ms": _time_models(model, input_size, [{}, *calibration],
                                                                                     timing)}
    built_s = time.perf_counter() - t0
    lm = LatencyModel(shapes, table, 0.0, 1.0, fits[model_key]["measured_ms"][0], {})
    sums = [lm.conv_sum(w) for w in [{}, *calibration]]
    measured = fits[model_key]["measured_ms"]
    lm.a, lm.b, lm.p = fit_latency(sums, measured)
    lm.dense_ms = lm.predict()
    fits[model_key].update(a=lm.a, b=lm.b, p=lm.p, conv_sums=sums, density=[1.0, *CALIBRATION_DENSITY[:len(calibration)]],
                           fit_error=[lm.predict(w) / t - 1 for w, t in zip([{}, *calibration], measured, strict=True)])
    prov = machine_provenance(timing)
    if todo or remeasure or "measured_s" not in fits[model_key]:
        fits[model_key]["measured_s"] = round(built_s, 2)
    lm.provenance = {**prov, "cache": str(path), "model": model_key, "measured_now": bool(todo) or remeasure,
                     "build_s": round(built_s, 2), "fit": fits[model_key]}
    try:
        write_json(path, {"provenance": {**prov, "date": time.strftime("%Y-%m-%d")}, "convs": table, "models": fits})
    except OSError:
        pass  # a read-only cache folder costs a remeasure next time, nothing more
    return lm


def _time_models(model: nn.Module, input_size: tuple[int, int], widths: list[dict[str, tuple[int, int]]],
                 timing: Timing, rounds: int = 6) -> list[float]:
    """Export copies of ``model`` at each of ``widths`` (random weights, BN folded, as export leaves them) and
    time them as the bench does (``bench.latency.interleaved``: two sessions each, ABBA rounds); the p50 of each."""
    import copy
    import tempfile

    from edgeticket.bench.latency import alternating_pools, interleaved
    from edgeticket.export.fold import fold_batchnorm
    from edgeticket.export.onnx_export import export_onnx, ort_session
    from edgeticket.models.adapt import adapt_widths

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, wd in enumerate(widths):
            m = copy.deepcopy(model).cpu().eval()
            if wd:
                m = adapt_widths(m, {k: list(v) for k, v in wd.items()})
            files.append(Path(tmp) / f"m{i}.onnx")
            export_onnx(fold_batchnorm(m), files[-1], input_size, {})
        pools = alternating_pools(len(files), 2, lambda i: ort_session(files[i], timing.resolved_threads(),
                                                                       timing.ort_provider(), timing.opt_level))
    times = interleaved([(p, input_size) for p in pools], 1, rounds, rounds * max(1, timing.runs // 3),
                        timing.warmup)
    return [float(np.median(t)) for t in times]
