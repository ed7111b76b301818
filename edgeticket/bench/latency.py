"""Latency the way a careful engineer measures it.

Warm-up runs first, then N timed runs, each a full ``session.run`` on a fixed random batch;
p50, p90, mean and min in milliseconds, at batch 1 and at a chosen batch size, with
intra-op threads set to the physical cores by default and ORT's graph optimisation level
recorded. Throughput is images per second at the p50.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; os.cpu_count() where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    pairs, phys, core = set(), None, None
    for line in text.splitlines() + [""]:
        if line.startswith("physical id"):
            phys = line.split(":")[1].strip()
        elif line.startswith("core id"):
            core = line.split(":")[1].strip()
        elif not line.strip():
            if core is not None:
                pairs.add((phys, core))
            phys = core = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(pairs) or affinity, affinity))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarize(times_ms: list[float], batch: int) -> dict:
    s = sorted(times_ms)
    p50 = statistics.median(s)
    return {
        "batch": batch,
        "runs": len(s),
        "p50": p50,
        "p90": float(np.percentile(s, 90)),
        "mean": statistics.fmean(s),
        "min": s[0],
        "images_per_s": batch * 1000.0 / p50 if p50 > 0 else float("inf"),
    }


def measure(sess, input_size: tuple[int, int], batch: int = 1, runs: int = 50, warmup: int = 5, seed: int = 0) -> dict:
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(seed).standard_normal((batch, 3, *input_size)).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1000.0)
    return summarize(times, batch)
