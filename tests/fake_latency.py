"""A fake machine for latency tables: a conv costs its MACs (1 ms per million), a model 1 ms plus its convs.

Shared by the budget tests (monkeypatched in) and the torchrun test's wrapper (patched in each rank).
With ``in_graph={group name: c}``, a group's channels save only ``c`` times their MACs inside a
model (as a conv whose lone cost overstates its cost in the graph would): a model then costs 1 ms
plus its convs' MACs plus ``(1 - c)`` times what each such group's narrowing saved in MACs.
"""

from __future__ import annotations

import numpy as np

import edgeticket.bench.latency_model as LM
from edgeticket.bench.latency_model import ConvShape, conv_shapes

NS_PER_MAC = 1e-6  # the fake machine: 1 ms per million MACs


def conv_macs(s: ConvShape, cin: int, cout: int) -> float:
    ho = (s.hw[0] + 2 * s.padding[0] - s.dilation[0] * (s.kernel[0] - 1) - 1) // s.stride[0] + 1
    wo = (s.hw[1] + 2 * s.padding[1] - s.dilation[1] * (s.kernel[1] - 1) - 1) // s.stride[1] + 1
    per = s.kernel[0] * s.kernel[1] * (1 if s.depthwise else cin)
    return ho * wo * per * (cin if s.depthwise else cout)


def measure_conv(s, timing):
    ins, outs = s.grid()
    outs = [0] if s.depthwise else outs
    ms = [[conv_macs(s, ci, ci if s.depthwise else co) * NS_PER_MAC for co in outs] for ci in ins]
    return {"in": ins, "out": outs, "ms": ms, "call_ms": 0.0}


def model_ms(model, size, widths: dict, in_graph: dict[str, float] | None = None) -> float:
    """The fake machine's latency of ``model`` at conv ``widths``, counted from MACs (not from the table)."""
    shapes = conv_shapes(model, size)

    def macs(wd):
        return sum(conv_macs(s, *wd.get(n, (s.cin, s.cout))) for n, s in shapes.items())

    total, groups = macs(widths), _groups(model) if in_graph else {}
    for name, c in (in_graph or {}).items():
        g = groups[name]
        full = dict(widths)
        for k in set(g.producers) | set(g.consumers):
            s = shapes[k]
            cin, cout = widths.get(k, (s.cin, s.cout))
            full[k] = (s.cin if k in g.consumers else cin, s.cout if k in g.producers else cout)
        total += (1.0 - c) * (macs(full) - macs(widths))
    return 1.0 + total * NS_PER_MAC


def _groups(model):
    from edgeticket.tickets.criteria.common import prunable_names
    from edgeticket.tickets.groups import build_graph, channel_groups, prunable_groups

    return {g.name: g for g in prunable_groups(channel_groups(model, build_graph(model)), set(prunable_names(model)))}


def time_samples_with(in_graph: dict[str, float] | None):
    """The fake ``_time_samples``: every round of every model at its MAC latency (no noise)."""
    def time_samples(model, size, widths_list, timing, rounds=6):
        import copy

        from edgeticket.models.adapt import adapt_widths

        for wd in widths_list:  # as the real timing exports them: widths a model must be buildable at
            adapt_widths(copy.deepcopy(model), {k: list(v) for k, v in wd.items()})
        return [np.full((rounds, 2), model_ms(model, size, wd, in_graph)) for wd in widths_list]
    return time_samples


def install(setattr_=setattr, on_call=None, in_graph: dict[str, float] | None = None) -> None:
    """Replace ONNX Runtime's timing in ``edgeticket.bench.latency_model`` (``on_call()`` runs on each use)."""

    def counted(f):
        def g(*a, **k):
            if on_call is not None:
                on_call()
            return f(*a, **k)
        return g

    setattr_(LM, "measure_conv", counted(measure_conv))
    setattr_(LM, "_time_samples", counted(time_samples_with(in_graph)))
