"""How to bench: latency rounds and runs, threads and provider, the gates, and preprocessing for foreign models."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.bench.gates import Gates
from edgeticket.hparams import Hparams, InputSize, hfield, parse_input_size
from edgeticket.models.card import RGB, parse_rgb


@dataclass
class BenchConfig(Hparams):
    section = "bench"

    runs: int = hfield(50, help="Timed runs per model (after warm-up), spread evenly over the rounds.", low=1,
                       high=100_000)
    rounds: int = hfield(10, help="Latency rounds: each times every model for runs/rounds runs, in a shuffled order.",
                         low=1, high=10_000)
    sessions: int = hfield(4, help="ONNX Runtime sessions per model, made in alternating turns and rotated over the "
                           "rounds; the interval draws sessions first (a session keeps its memory placement).",
                           low=1, high=64)
    warmup: int = hfield(5, help="Warm-up runs of every model before the first round.", low=0, high=100_000)
    batch_size: int = hfield(8, help="Batch for accuracy and the second latency figure.", low=1, high=1024)
    threads: int | None = hfield(None, help="Intra-op threads (default: physical cores).", low=1, high=1024)
    spin: bool = hfield(True, help="ORT's intra-op threads spin between runs (its default; off saves CPU, adds wake-up latency).")
    provider: str = hfield("cpu", help="cpu or cuda (CUDAExecutionProvider when present).", choices=("cpu", "cuda"))
    opt_level: str = hfield("all", help="ORT graph optimisation: disable, basic, extended, all.",
                            choices=("disable", "basic", "extended", "all"))
    gate: Gates = hfield(Gates(), help='e.g. "delta1_drop<=0.01,speedup>=2": exit 1 when a model fails.',
                         parse=Gates.parse)
    gate_strict: bool = hfield(False, help="Gates decide on the far end of the speed-up's 95% interval, not its point.")
    input_size: InputSize | None = hfield(None, help="For models without metadata: HEIGHTxWIDTH.",
                                          parse=parse_input_size)
    mean: RGB | None = hfield(None, help="For models without metadata: r,g,b.", parse=parse_rgb)
    std: RGB | None = hfield(None, help="For models without metadata: r,g,b (each > 0).",
                             parse=lambda t: parse_rgb(t, positive=True))
    limit: int | None = hfield(None, help="Evaluate only the first N test frames.", low=1)
    panel_frames: int = hfield(3, help="Test frames in predictions.png.", low=0, high=64)
