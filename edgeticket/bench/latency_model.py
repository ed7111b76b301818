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

3. **In-graph factors (opt-in).** Given ``probes`` (one per prunable group: the dense model with
   only that group at ``PROBE_FRACTION`` of its channels), each probe is timed beside a dense copy
   and a factor per group is fitted with ``a, b, p`` (``_fit``): how much of the table's saving of
   that group the whole graph gives. Off for searches until it is shown to help (BENCHMARKS.md).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeticket.fsio import write_json

GRID = (0.125, 0.25, 0.5, 0.75, 1.0)
TABLE_VERSION = 2
FIT_VERSION = 3  # 3: with in-graph group factors; 2: a + b * sum ** p through five uniform widths; 1: through two
SLOW_MS, SLOW_BUDGET_MS = 10.0, 150.0
CALIBRATION_DENSITY = (0.6, 0.3, 0.12, 0.04)  # effective densities of the calibration models, besides dense
P_RANGE = (0.7, 1.6)
PROBE_FRACTION = 0.25  # a group's probe keeps this fraction of its channels, everything else dense
PROBE_BATCH = 8  # probes timed together with one dense copy (memory: two sessions per model)
FACTOR_RANGE = (0.05, 4.0)  # an in-graph factor is clipped to this (a probe measured slower than dense: noise)
FACTOR_PRIOR = 0.5  # a factor's prior spread around 1: where a probe is within its noise, the factor stays near 1
SE_FLOOR = 0.002  # the relative error a timing is trusted to, at best (a calibration point's, a probe's least)


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

    def macs(self, cin: int, cout: int) -> int:
        """Multiply-accumulates of this conv at ``cin`` x ``cout`` channels for one image (as ``models.macs``)."""
        k = self
        ho = (k.hw[0] + 2 * k.padding[0] - k.dilation[0] * (k.kernel[0] - 1) - 1) // k.stride[0] + 1
        wo = (k.hw[1] + 2 * k.padding[1] - k.dilation[1] * (k.kernel[1] - 1) - 1) // k.stride[1] + 1
        return ho * wo * k.kernel[0] * k.kernel[1] * (min(cin, cout) if k.depthwise else cin * cout)

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

@dataclass(frozen=True)
class GroupProbe:
    """A prunable channel group as the latency model sees it: the convs whose output (producers) and
    input (consumers) widths are its channels, and the widths of its probe (the dense model with only
    this group narrowed to ``PROBE_FRACTION``, as compaction would leave it)."""

    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    widths: dict[str, tuple[int, int]]


@dataclass
class LatencyModel:
    """Predicted milliseconds of a model whose convs have given widths: ``a + b * S ** p``.

    ``S`` is the table's sum over convs, with each group's saving scaled by its in-graph factor:
    ``S = sum(table) + sum_g (1 - c_g) * saving_g``, where ``saving_g`` is what the table says
    the group's convs save at the current widths against the group at full width. With only one
    group narrowed, ``S`` is the dense sum less ``c_g`` times the table's saving.
    """

    shapes: dict[str, ConvShape]
    table: dict[str, dict]
    a: float
    b: float
    dense_ms: float
    provenance: dict
    p: float = 1.0
    groups: dict[str, GroupProbe] = field(default_factory=dict)
    factors: dict[str, float] = field(default_factory=dict)  # c_g: measured in-graph saving / the table's

    def conv_ms(self, name: str, cin: int, cout: int) -> float:
        s = self.shapes[name]
        if s.depthwise:  # compaction keeps a depthwise conv's input and output channels equal
            cin = cout = min(cin, cout)
        return interp_conv(self.table[s.key], cin, cout, s.depthwise)

    def conv_sum(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        """The table's sum over convs, uncorrected."""
        widths = widths or {}
        return sum(self.conv_ms(n, *widths.get(n, (s.cin, s.cout))) for n, s in self.shapes.items())

    def group_saving(self, name: str, widths: dict[str, tuple[int, int]]) -> float:
        """The table's milliseconds that group ``name`` saves at ``widths``, against the group at full width."""
        g, saved = self.groups[name], 0.0
        for k in set(g.producers) | set(g.consumers):
            s = self.shapes.get(k)
            if s is None:
                continue
            cin, cout = widths.get(k, (s.cin, s.cout))
            full_in = s.cin if k in g.consumers or s.depthwise else cin  # a depthwise conv's in is its out
            full_out = s.cout if k in g.producers or s.depthwise else cout
            saved += self.conv_ms(k, full_in, full_out) - self.conv_ms(k, cin, cout)
        return saved

    def corrected_sum(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        widths = widths or {}
        total = self.conv_sum(widths)
        for name, c in self.factors.items():
            if c != 1.0:
                total += (1.0 - c) * self.group_saving(name, widths)
        return total

    def predict(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        return self.a + self.b * max(self.corrected_sum(widths), 0.0) ** self.p

    def factor(self, name: str) -> float:
        return self.factors.get(name, 1.0)

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
                        timing: Timing | None = None, *, model_key: str, probes: dict[str, GroupProbe] | None = None,
                        remeasure: bool = False, progress: bool = False) -> LatencyModel:
    """Measure (or read from the cache) the table for ``model`` at ``input_size`` and fit ``a, b, p``
    and, given ``probes``, each group's in-graph factor.

    ``calibration`` holds the alive widths of the model at each of ``CALIBRATION_DENSITY`` (the
    calibration points besides the dense model); ``probes`` one ``GroupProbe`` per prunable group,
    by group name; ``model_key`` names the architecture and input size in the cache.
    """
    timing = timing or Timing()
    probes = probes or {}
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
    fresh = remeasure or bool(todo) or old.get("fit_version") != FIT_VERSION
    measured_any = bool(todo)
    if fresh or len(old.get("measured_ms", [])) != len(calibration) + 1 or "measured_se" not in old:
        measured_any = True
        if progress:
            print(f"  latency calibration: the dense model and {len(calibration)} narrower ones", flush=True)
        samples = _time_samples(model, input_size, [{}, *calibration], timing)
        old = {"fit_version": FIT_VERSION, "measured_ms": [float(np.median(t)) for t in samples],
               "measured_se": [_relative_se(t) for t in samples]}
    old_probes = {} if fresh else old.get("probes", {})
    wanted = {g: _narrowed(pr.widths, shapes) for g, pr in probes.items()}
    if probes and {g: r.get("narrowed") for g, r in old_probes.items()} != wanted:
        measured_any = True
        old_probes = _time_probes(model, input_size, probes, timing, progress)
    fits[model_key] = {**old, "probes": old_probes}  # kept when not asked for, for the next model that is
    old_probes = old_probes if probes else {}
    built_s = time.perf_counter() - t0
    lm = LatencyModel(shapes, table, 0.0, 1.0, fits[model_key]["measured_ms"][0], {},
                      groups=dict(probes), factors={})
    plain = _fit(lm, [{}, *calibration], fits[model_key]["measured_ms"], old_probes,
                 fits[model_key].get("measured_se"))
    lm.dense_ms = lm.predict()
    measured = fits[model_key]["measured_ms"]
    fits[model_key].update(
        a=lm.a, b=lm.b, p=lm.p, conv_sums=[lm.corrected_sum(w) for w in [{}, *calibration]],
        density=[1.0, *CALIBRATION_DENSITY[:len(calibration)]],
        fit_error=[lm.predict(w) / t - 1 for w, t in zip([{}, *calibration], measured, strict=True)],
        factors=dict(lm.factors), uncorrected=dict(zip("abp", plain, strict=True)),
        probe_error={g: lm.predict(probes[g].widths) / (r["measured_ms"] / r["dense_ms"] * lm.dense_ms) - 1
                     for g, r in old_probes.items()})
    prov = machine_provenance(timing)
    if measured_any or "measured_s" not in fits[model_key]:
        fits[model_key]["measured_s"] = round(built_s, 2)
    lm.provenance = {**prov, "cache": str(path), "model": model_key, "measured_now": measured_any,
                     "build_s": round(built_s, 2), "fit": fits[model_key]}
    try:
        write_json(path, {"provenance": {**prov, "date": time.strftime("%Y-%m-%d")}, "convs": table, "models": fits})
    except OSError:
        pass  # a read-only cache folder costs a remeasure next time, nothing more
    return lm


def _fit(lm: LatencyModel, widths: list[dict], measured: list[float], probes: dict[str, dict],
         measured_se: list[float] | None = None) -> tuple[float, float, float]:
    """Fit ``a, b, p`` through the calibration points and, given probes, every group's factor with them;
    returns the ``a, b, p`` of the table alone (no factors), for the record.

    Without probes this is ``fit_latency``. With them, one least-squares problem holds both kinds of
    measurement: each calibration point's relative error, and each probe's error against the ratio
    it measured beside its dense copy (``t_g / t_d`` of the dense prediction), each divided by its
    own standard error across rounds (at least ``SE_FLOOR``), so that a measurement inside the
    timing noise says little. (Weighting the calibration points at ``SE_FLOOR`` whatever their
    noise let twenty factors bend to fit five noisy points: factors at both bounds, and a
    budgeted 2x ticket measured at 1.32x; BENCHMARKS.md.) A prior ``(c_g - 1) / FACTOR_PRIOR`` pulls each factor towards
    1 where its probe cannot tell. Everything the residuals need of the table is computed once:
    the uncorrected sums and each group's table saving at each point, so a point's corrected sum
    is ``K + Q @ (1 - c)``. Fitting ``a, b, p`` and the factors in turns instead stalls (on the
    fake machine of the tests: every factor 0.72 and ``p`` at its bound).
    """
    lm.factors = {}
    lm.a, lm.b, lm.p = plain = fit_latency([max(1e-9, lm.conv_sum(w)) for w in widths], measured)
    if not probes:
        return plain
    from scipy.optimize import least_squares

    names = sorted(probes)
    points = [*widths, *(lm.groups[g].widths for g in names)]
    K = np.array([lm.conv_sum(w) for w in points])
    Q = np.array([[lm.group_saving(g, w) for g in names] for w in points])
    t = np.asarray(measured, np.float64)
    ratio = np.array([probes[g]["measured_ms"] / probes[g]["dense_ms"] for g in names])
    se = np.maximum(np.array([probes[g].get("ratio_se", 0.0) for g in names]), SE_FLOOR)
    n = len(widths)
    cal_se = np.maximum(np.asarray(measured_se if measured_se and len(measured_se) == n else [0.0] * n), SE_FLOOR)

    def residuals(x):
        a, b, p, c = x[0], x[1], x[2], x[3:]
        pred = a + b * np.maximum(K + Q @ (1.0 - c), 1e-9) ** p
        cal = (pred[:n] / t - 1.0) / cal_se
        probe = (pred[n:] / (ratio * pred[0]) - 1.0) / se
        return np.concatenate([cal, probe, (c - 1.0) / FACTOR_PRIOR])

    x0 = np.array([lm.a, lm.b, lm.p, *np.ones(len(names))])
    lo = np.array([0.0, 1e-6, P_RANGE[0], *np.full(len(names), FACTOR_RANGE[0])])
    hi = np.array([np.inf, np.inf, P_RANGE[1], *np.full(len(names), FACTOR_RANGE[1])])
    x = least_squares(residuals, np.clip(x0, lo, hi), bounds=(lo, hi), x_scale="jac", xtol=1e-12, ftol=1e-12,
                      gtol=1e-12, max_nfev=2000).x
    lm.a, lm.b, lm.p = float(x[0]), float(x[1]), float(x[2])
    lm.factors = {g: float(c) for g, c in zip(names, x[3:], strict=True)}
    return plain


CHECK_ROUNDS = 20  # interleaved rounds of a check (``measure_beside_dense``): its interval comes from their spread


def measure_beside_dense(model: nn.Module, input_size: tuple[int, int], widths: dict[str, tuple[int, int]],
                         timing: Timing, rounds: int = CHECK_ROUNDS) -> dict:
    """Time a ticket (``model`` at ``widths``, exported as the bench exports it) beside the dense model,
    interleaved as the bench times (``_time_samples``): both p50s, the speed-up (the ratio of the two
    p50s), the relative standard error of that ratio (``se``) and its 95% interval, from the spread of
    the per-round ratios."""
    dense, ticket = _time_samples(model, input_size, [{}, widths], timing, rounds=rounds)
    d, t = float(np.median(dense)), float(np.median(ticket))
    se = _relative_se(ticket, dense)
    speedup = d / t
    return {"dense_p50_ms": d, "ticket_p50_ms": t, "speedup": speedup,
            "speedup_ci": [speedup * float(np.exp(-1.96 * se)), speedup * float(np.exp(1.96 * se))],
            "se": se, "rounds": rounds}


def _time_probes(model: nn.Module, input_size: tuple[int, int], probes: dict[str, GroupProbe], timing: Timing,
                 progress: bool) -> dict[str, dict]:
    """Each probe's p50 beside a dense copy timed in the same interleaved rounds, ``PROBE_BATCH`` at a time,
    and the standard error of their ratio across rounds."""
    names, out = sorted(probes), {}
    for i in range(0, len(names), PROBE_BATCH):
        batch = names[i:i + PROBE_BATCH]
        if progress:
            print(f"  latency probes: groups {i + 1}-{i + len(batch)} of {len(names)}, each narrowed alone", flush=True)
        dense, *rest = _time_samples(model, input_size, [{}, *(probes[g].widths for g in batch)], timing)
        for g, t in zip(batch, rest, strict=True):
            out[g] = {"measured_ms": float(np.median(t)), "dense_ms": float(np.median(dense)),
                      "ratio_se": _relative_se(t, dense),
                      "narrowed": _narrowed(probes[g].widths, conv_shapes(model, input_size))}
    return out


def _relative_se(t: np.ndarray, reference: np.ndarray | None = None) -> float:
    """The standard error, relative, of a p50 (or of its ratio to ``reference``'s, timed in the same rounds),
    from the spread of the per-round medians."""
    r = np.median(t, axis=1) if reference is None else np.median(t, axis=1) / np.median(reference, axis=1)
    logs = np.log(r)
    return float(np.std(logs, ddof=1) / np.sqrt(len(logs))) if len(logs) > 1 else 0.0


def _narrowed(widths: dict[str, tuple[int, int]], shapes: dict[str, ConvShape]) -> dict[str, list]:
    """The convs a probe narrows, with their widths (what its cache entry must match)."""
    return {k: list(v) for k, v in sorted(widths.items()) if k in shapes and tuple(v) != (shapes[k].cin, shapes[k].cout)}


def _time_samples(model: nn.Module, input_size: tuple[int, int], widths: list[dict[str, tuple[int, int]]],
                  timing: Timing, rounds: int = 6) -> list[np.ndarray]:
    """Export copies of ``model`` at each of ``widths`` (random weights, BN folded, as export leaves them) and
    time them as the bench does (``bench.latency.interleaved``: two sessions each, ABBA rounds); each one's
    times in ms, one row per round."""
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
    return times
