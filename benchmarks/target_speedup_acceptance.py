"""Issue 24's acceptance figure: a ``--target-speedup 2`` search on fcrn_resnet18 at 96x128, its export benched.

    python benchmarks/target_speedup_acceptance.py OUT [--threads N] [--runs 30] [--rooms 24]

Renders the synthetic rooms, runs the search (1 epoch a level, ``--rate 0.3``, a fresh latency cache
under OUT unless ``--cache`` names one, the latency check on as by default), exports level 0 and
the final level, benches the ticket against the dense export, and prints predicted and measured speed-ups. Exits 1 unless the bench
measures >= 1.8x (or the interval reaches 1.8 with the point >= 1.6, as the bench's gates judge noise).
It is a benchmark, not a unit test: the figure depends on the machine (BENCHMARKS.md has both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TARGET, NOISE_FLOOR = 1.8, 1.6


def run(*args: str) -> None:
    exe = Path(sys.executable).parent / "edgeticket"
    r = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"edgeticket {' '.join(args[:2])} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rooms", type=int, default=24)
    ap.add_argument("--cache", help="the latency cache folder (default: OUT/latency, fresh)")
    args = ap.parse_args()
    out = Path(args.out)
    os.environ["EDGETICKET_CACHE"] = args.cache or str(out / "latency")
    threads = ["--threads", str(args.threads)] if args.threads else []
    if not (out / "synth" / "splits.mat").exists():
        run("data", "synth", "--out", str(out / "synth"), "--n", str(args.rooms), "--seed", "0", "--quiet")
    run("search", "--data", str(out / "synth"), "--out", str(out / "search"), "--arch", "fcrn_resnet18",
        "--pretrained", "none", "--input-size", "96x128", "--val-fraction", "0.15", "--epochs", "1",
        "--batch-size", "8", "--device", "cpu", "--criterion", "channel", "--rate", "0.3", "--levels", "5",
        "--target-speedup", "2", *threads, "--quiet", "--overwrite")
    last = sorted((out / "search").glob("level_*"))[-1]
    for src, name in ((out / "search" / "level_00", "dense"), (last, "ticket")):
        run("export", str(src), "--out", str(out / name), "--quiet", "--overwrite")
    run("bench", str(out / "ticket" / "model.onnx"), "--baseline", str(out / "dense" / "model.onnx"), "--data",
        str(out / "synth"), "--out", str(out / "bench"), "--limit", "2", "--runs", str(args.runs), *threads, "--quiet")
    report = json.loads((out / "bench" / "report.json").read_text())
    ticket = next(e for e in report["models"] if not e["baseline"])
    v = ticket["vs_baseline"]
    predicted = json.loads((last / "sparsity.json").read_text())["predicted_speedup"]
    ok = v["speedup"] >= TARGET or v["speedup_ci"][1] >= TARGET and v["speedup"] >= NOISE_FLOOR
    print(f"{report['machine']['cpu']}, {report['threads']} threads: {last.name} predicted {predicted:.2f}x, "
          f"measured {v['speedup']:.2f}x [{v['speedup_ci'][0]:.2f}, {v['speedup_ci'][1]:.2f}] "
          f"(p50 {ticket['latency_ms']['p50']:.2f} ms, predicted {ticket['predicted_latency_ms']:.2f} ms): "
          + ("meets" if ok else "misses") + f" the {TARGET}x target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
