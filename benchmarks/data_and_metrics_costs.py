"""What issue 20's data and metric changes cost: synthetic views, scene names, BTS's NaN rule.

    python benchmarks/data_and_metrics_costs.py --rounds 3 --frames 6
    git show 981ec3e:edgeticket/train/metrics.py > /tmp/old_metrics.py   # the metrics before issue 20
    python benchmarks/data_and_metrics_costs.py --rounds 10 --against /tmp/old_metrics.py

- rendering: frames/s of one process at 640x480, one view per room against three, in
  interleaved rounds (every round renders both, in turn), median and range over the rounds;
- scene names: seconds to read 1,449 scene names from a labeled .mat (h5py dereferences
  each one), which ``data prepare`` pays once per cache and the bench once per run;
- metrics: ms per ``MetricAccumulator.update`` of a batch of 16 at 480x640 from 228x304
  predictions, finite and with NaN/inf (the non-finite mapping runs on every batch); with
  ``--against FILE`` also an older metrics.py, interleaved with today's on the finite batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgeticket.data.nyu import LabeledMat, write_labeled_mat
from edgeticket.data.synth import render_set_frame
from edgeticket.train.metrics import MetricAccumulator


def _spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4), "max": round(max(xs), 4)}


def render_rates(rounds: int, frames: int) -> dict:
    rates: dict[int, list[float]] = {1: [], 3: []}
    for r in range(rounds):
        for views in (1, 3) if r % 2 == 0 else (3, 1):
            t0 = time.perf_counter()
            for i in range(frames):
                render_set_frame(r, i, views)
            rates[views].append(frames / (time.perf_counter() - t0))
    return {f"views={v} frames/s": _spread(x) for v, x in rates.items()}


def scene_name_seconds(rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "labeled.mat"
        write_labeled_mat(path, [], 1449, scenes=[f"kitchen_{i // 3:04d}" for i in range(1449)], unwritten_ok=True)
        times = []
        for _ in range(rounds):
            src = LabeledMat(path)
            t0 = time.perf_counter()
            src.scene_names()
            times.append(time.perf_counter() - t0)
            src.close()
    return {"1449 scene names, s": _spread(times)}


def metric_ms(rounds: int, against: str | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(16, 1, 480, 640, generator=g) * 9 + 0.5
    finite = torch.rand(16, 1, 228, 304, generator=g) * 9 + 0.5
    broken = finite.clone()
    broken[:, :, :50] = float("nan")
    broken[:, :, 100:110] = float("inf")
    runs = [("finite", MetricAccumulator, finite), ("nan/inf", MetricAccumulator, broken)]
    if against:
        spec = importlib.util.spec_from_file_location("older_metrics", against)
        older = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(older)
        runs.append((f"finite, {against}", older.MetricAccumulator, finite))
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for r in range(rounds):
        for name, acc_cls, pred in runs if r % 2 == 0 else runs[::-1]:
            acc = acc_cls()
            t0 = time.perf_counter()
            acc.update(pred, gt)
            acc.compute()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {f"metrics update, batch 16, {name}, ms": _spread(x) for name, x in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=6, help="Frames per round and per setting.")
    ap.add_argument("--against", help="An older edgeticket/train/metrics.py to time beside today's.")
    a = ap.parse_args()
    torch.set_num_threads(2)
    res = {**render_rates(a.rounds, a.frames), **scene_name_seconds(a.rounds), **metric_ms(max(a.rounds, 5), a.against)}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
