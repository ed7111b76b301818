"""ONNX Runtime evaluation on the test split, latency, gates, the report and its plots.

``edgeticket.bench(models, baseline, data, out, BenchConfig(...))`` calls ``edgeticket.bench.api.bench``.
"""

from edgeticket._callable import make_callable

make_callable(__name__, "edgeticket.bench.api:bench")
