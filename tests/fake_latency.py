"""A fake machine for latency tables: a conv costs its MACs (1 ms per million), a model 1 ms plus its convs.

Shared by the budget tests (monkeypatched in) and the torchrun test's wrapper (patched in each rank).
"""

from __future__ import annotations

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


def time_models(model, size, widths_list, timing):
    shapes = conv_shapes(model, size)
    return [1.0 + sum(conv_macs(s, *wd.get(n, (s.cin, s.cout))) for n, s in shapes.items()) * NS_PER_MAC
            for wd in widths_list]


def install(setattr_=setattr, on_call=None) -> None:
    """Replace ONNX Runtime's timing in ``edgeticket.bench.latency_model`` (``on_call()`` runs on each use)."""

    def counted(f):
        def g(*a, **k):
            if on_call is not None:
                on_call()
            return f(*a, **k)
        return g

    setattr_(LM, "measure_conv", counted(measure_conv))
    setattr_(LM, "_time_models", counted(time_models))
