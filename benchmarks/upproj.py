"""Fast vs naive up-projection: MACs and ONNX Runtime latency of FCRN (random weights).

    python benchmarks/upproj.py --arch fcrn_resnet50 --threads 2 --runs 30

Both decoders export to ONNX (BN folded) and run in ORT's CPU provider at batch 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from edgeticket.bench.latency import cpu_model, measure
from edgeticket.export.fold import fold_batchnorm
from edgeticket.export.onnx_export import export_onnx, ort_session
from edgeticket.models import build_model
from edgeticket.models.macs import count_macs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="fcrn_resnet50")
    ap.add_argument("--size", default="228x304")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        for label, fast in (("naive (unpool + 5x5)", False), ("fast (four sub-convs)", True)):
            torch.manual_seed(0)
            model = build_model(a.arch, fast=fast).eval()
            folded = fold_batchnorm(model)
            path = Path(d) / f"{fast}.onnx"
            export_onnx(folded, path, size, {})
            lat = measure(ort_session(path, a.threads), size, 1, a.runs, 5)
            rows[label] = {"gmacs": count_macs(folded, size) / 1e9, "p50_ms": lat["p50"], "min_ms": lat["min"],
                           "p90_ms": lat["p90"]}
    print(json.dumps({"arch": a.arch, "size": a.size, "threads": a.threads, "cpu": cpu_model(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
