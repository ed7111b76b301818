"""Budgeted against uniform channel tickets at equal *measured* speed-up (issue 24's comparison).

    python benchmarks/equal_measured_speedup.py OUT [--targets 2 4] [--threads 1] [--rooms 24] [--runs 30]

For each target X and each ``--allocation`` (latency: HALP-style importance per predicted ms;
macs: importance times the MACs removed, per ms; uniform: one channel fraction for every group),
one search of fcrn_resnet18 from scratch at 96x128 (1 epoch a level, ``--rate 0.3``,
``--target-speedup X``, the latency check on, one latency cache for all), so that each final level
has been timed beside the dense model and pruned again until it measures X. Then the final levels
and the dense level 0 are exported and benched together (``edgeticket bench``, interleaved;
``--allow-constant``: a 4x ticket from scratch after one epoch a level may predict one depth
everywhere, which does not change its latency), and one row per search is printed: GMACs kept,
predicted speed-up, the search's check and the bench's measurement, with their 95% intervals, and
val δ1. The question is which allocation keeps more MACs at the speed-up both measure.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from target_speedup_acceptance import run

ALLOCATIONS = ("latency", "macs", "uniform")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--targets", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rooms", type=int, default=24)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    out = Path(args.out)
    os.environ["EDGETICKET_CACHE"] = str(out / "latency")
    if not (out / "synth" / "splits.mat").exists():
        run("data", "synth", "--out", str(out / "synth"), "--n", str(args.rooms), "--seed", "0", "--quiet")
    searches = {}
    for x in args.targets:
        for alloc in ALLOCATIONS:
            root = out / f"{alloc}_{x:g}x"
            if not (root / "summary.json").exists():
                run("search", "--data", str(out / "synth"), "--out", str(root), "--arch", "fcrn_resnet18",
                    "--pretrained", "none", "--input-size", "96x128", "--val-fraction", "0.15", "--epochs", "1",
                    "--batch-size", "8", "--device", "cpu", "--criterion", "channel", "--rate", "0.3", "--levels",
                    "8", "--target-speedup", f"{x:g}", "--allocation", alloc, "--threads", str(args.threads),
                    "--quiet", "--overwrite")
            searches[(x, alloc)] = sorted(root.glob("level_*"))[-1]
    first = next(iter(searches.values())).parent
    exports = {"dense": first / "level_00", **{f"{a}_{x:g}x": d for (x, a), d in searches.items()}}
    for name, src in exports.items():
        if not (out / "onnx" / name / "model.onnx").exists():
            run("export", str(src), "--out", str(out / "onnx" / name), "--quiet", "--overwrite", "--allow-constant")
    models = [str(out / "onnx" / n / "model.onnx") for n in exports if n != "dense"]
    run("bench", *models, "--baseline", str(out / "onnx" / "dense" / "model.onnx"), "--data", str(out / "synth"),
        "--out", str(out / "bench"), "--limit", "2", "--runs", str(args.runs), "--threads", str(args.threads),
        "--quiet")
    report = json.loads((out / "bench" / "report.json").read_text())
    by_path = {str(Path(e["path"]).parent.name): e for e in report["models"] if not e["baseline"]}
    print(f"{report['machine']['cpu']}, {report['threads']} thread(s)")
    print("| target | allocation | level | GMACs | predicted | search's check [95%] | bench [95%] | val δ1 |")
    print("|---|---|---|---|---|---|---|---|")
    for (x, alloc), d in searches.items():
        sp = json.loads((d / "sparsity.json").read_text())
        met = json.loads((d / "metrics.json").read_text())
        chk = sp.get("latency_check")
        v = by_path[f"{alloc}_{x:g}x"]["vs_baseline"]
        check = (f"{chk['measured_speedup']:.2f}x [{chk['measured_speedup_ci'][0]:.2f}, "
                 f"{chk['measured_speedup_ci'][1]:.2f}], {len(chk['attempts'])} tries" if chk else "–")
        print(f"| {x:g}x | {alloc} | {d.name} | {sp['macs']['channel'] / 1e9:.3f} | {sp['predicted_speedup']:.2f}x | "
              f"{check} | {v['speedup']:.2f}x [{v['speedup_ci'][0]:.2f}, {v['speedup_ci'][1]:.2f}] | "
              f"{met['val']['delta1']:.4f} |")


if __name__ == "__main__":
    main()
