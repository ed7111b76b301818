"""Latency-budgeted vs uniform channel tickets on one schedule of predicted latencies (issue 24).

Per seed s, two searches that differ only in ``--allocation`` (same data, seed, schedule, training):

    edgeticket search --data SYNTH --arch fcrn_resnet18 --pretrained none --input-size 96x128 --val-fraction 0.2 \\
        --levels 5 --epochs 5 --batch-size 8 --optimizer adamw --lr 0.001 --decoder-lr-mult 1 \\
        --criterion channel --rate 0.3 --target-speedup 4 --threads 1 --seed s \\
        --allocation latency|uniform --out ROOT/{latency,uniform}_s{s}

Each level k asks both for the same predicted latency (1.43x, 2.04x, 2.92x, then the 4x target):
``latency`` spends it by importance per millisecond (HALP-style), ``uniform`` by one channel
fraction for every group. Optionally, a bench report of the exported levels (``--bench
report.json``, models named ``{allocation}_s{s}_l{k}``) adds the measured speed-ups.

    python benchmarks/budget_vs_uniform_delta1.py ROOT [--bench BENCH/report.json]

prints one row per seed and level, then per level the mean ± sample sd over seeds and the paired
difference (latency - uniform).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ALLOCATIONS = ("latency", "uniform")


def level_row(d: Path) -> dict:
    met = json.loads((d / "metrics.json").read_text())
    sp = json.loads((d / "sparsity.json").read_text())
    return {"speedup": sp["predicted_speedup"], "gmacs": sp["macs"]["channel"] / 1e9,
            "sparsity": sp["total"]["sparsity"], "val_delta1": met["val"]["delta1"], "val_rmse": met["val"]["rmse"],
            "test_delta1": met["test"]["delta1"], "test_rmse": met["test"]["rmse"]}


def _ms(xs: list[float], fmt: str) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt.lstrip('+'))}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bench", help="a bench report.json of the exported levels")
    args = ap.parse_args()
    root = Path(args.root)
    measured = {}
    if args.bench:
        for e in json.loads(Path(args.bench).read_text())["models"]:
            v = e.get("vs_baseline") or {}
            measured[e["name"]] = (v.get("speedup"), v.get("speedup_ci"))
    rows: dict[tuple[str, int], dict] = {}  # (allocation, level) -> {seed: row}
    seeds = args.seeds.split(",")
    for a in ALLOCATIONS:
        for s in seeds:
            for d in sorted((root / f"{a}_s{s}").glob("level_*")):
                k = int(d.name.split("_")[1])
                r = level_row(d)
                r["measured"], r["measured_ci"] = measured.get(f"{a}_s{s}_l{k}", (None, None))
                rows.setdefault((a, k), {})[s] = r
    print("| level | seed | allocation | predicted | measured [95%] | GMACs | val δ1 | val rmse | test δ1 | test rmse |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    levels = sorted({k for _, k in rows} - {0})
    for k in levels:
        for s in seeds:
            for a in ALLOCATIONS:
                r = rows.get((a, k), {}).get(s)
                if r is None:
                    continue
                m = (f"{r['measured']:.2f}x [{r['measured_ci'][0]:.2f}, {r['measured_ci'][1]:.2f}]"
                     if r["measured"] is not None else "–")
                print(f"| {k} | {s} | {a} | {r['speedup']:.2f}x | {m} | {r['gmacs']:.3f} | {r['val_delta1']:.4f} | "
                      f"{r['val_rmse']:.4f} | {r['test_delta1']:.4f} | {r['test_rmse']:.4f} |")
    print()
    print("| level | allocation | predicted | measured | GMACs | val δ1 | val rmse | test δ1 | test rmse |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in [0, *levels]:
        for a in ALLOCATIONS:
            rs = list(rows.get((a, k), {}).values())
            if not rs:
                continue
            col = {f: [r[f] for r in rs] for f in rs[0]}
            print(f"| {k} | {a} | {_ms(col['speedup'], '.2f')}x | {_ms(col['measured'], '.2f')} | "
                  f"{_ms(col['gmacs'], '.3f')} | {_ms(col['val_delta1'], '.4f')} | {_ms(col['val_rmse'], '.4f')} | "
                  f"{_ms(col['test_delta1'], '.4f')} | {_ms(col['test_rmse'], '.4f')} |")
        both = [s for s in seeds if s in rows.get(("latency", k), {}) and s in rows.get(("uniform", k), {})]
        if both:
            diff = {f: [rows[("latency", k)][s][f] - rows[("uniform", k)][s][f] for s in both]
                    for f in ("gmacs", "val_delta1", "val_rmse", "test_delta1", "test_rmse")}
            print(f"| {k} | latency - uniform (paired, n={len(both)}) | | | {_ms(diff['gmacs'], '+.3f')} | "
                  f"{_ms(diff['val_delta1'], '+.4f')} | {_ms(diff['val_rmse'], '+.4f')} | "
                  f"{_ms(diff['test_delta1'], '+.4f')} | {_ms(diff['test_rmse'], '+.4f')} |")


if __name__ == "__main__":
    main()
