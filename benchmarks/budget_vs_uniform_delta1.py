"""Val δ1 of latency-budgeted and uniform channel tickets at equal predicted speed-up (issue 24).

Reads search folders made by (per seed s; the same flags otherwise, see BENCHMARKS.md):

    edgeticket search ... --criterion channel --rate 0.3 --seed s --levels 5 --target-speedup 2 --out DIR/b2_s
    edgeticket search ... --criterion channel --rate 0.3 --seed s --levels 8 --target-speedup 4 --out DIR/b4_s
    edgeticket search ... --criterion channel --rate 0.3 --seed s --levels 6 --out DIR/u_s

and, with the same latency cache (``$EDGETICKET_CACHE``), predicts every uniform level's latency
with the model the budgeted searches used; for each target it takes the budgeted search's final
level and the uniform level whose predicted speed-up is nearest, and prints both.

    python benchmarks/budget_vs_uniform_delta1.py DIR --arch fcrn_resnet18 --size 96x128
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--arch", default="fcrn_resnet18")
    ap.add_argument("--size", default="96x128")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()

    from edgeticket.bench.latency_model import CALIBRATION_DENSITY, Timing, build_latency_model
    from edgeticket.models.registry import build_model
    from edgeticket.tickets.criteria.channel import prune_channels
    from edgeticket.tickets.criteria.common import prunable_names, with_bn_entries
    from edgeticket.tickets.groups import build_graph, channel_groups, prunable_groups
    from edgeticket.tickets.imp import alive_widths
    from edgeticket.tickets.mask import Mask

    h, w = (int(v) for v in args.size.split("x"))
    m = build_model(args.arch).eval()
    scope = prunable_names(m)
    groups = prunable_groups(channel_groups(m, build_graph(m)), set(scope))
    init = with_bn_entries(Mask.ones(m, scope), groups)
    cal = [alive_widths(m, prune_channels(m.state_dict(), init, groups, d, 8).mask, groups) for d in CALIBRATION_DENSITY]
    lm = build_latency_model(m, (h, w), cal, Timing(), model_key=f"{args.arch}@{h}x{w}")
    assert not lm.provenance["measured_now"], "use the latency cache the searches used"
    root = Path(args.root)

    def level(d: Path) -> dict:
        met = json.loads((d / "metrics.json").read_text())
        sp = json.loads((d / "sparsity.json").read_text())
        pred = lm.predict(alive_widths(m, Mask.load(d / "mask.pt"), groups))
        return {"level": d.name, "speedup": lm.dense_ms / pred, "val_delta1": met["val"]["delta1"],
                "test_delta1": met["test"]["delta1"], "gmacs": sp["macs"]["channel"] / 1e9}

    rows = {}
    for x in (2, 4):
        for s in args.seeds.split(","):
            b = level(sorted((root / f"b{x}_s{s}").glob("level_*"))[-1])
            us = [level(d) for d in sorted((root / f"u_s{s}").glob("level_*"))]
            u = min(us, key=lambda r: abs(r["speedup"] - b["speedup"]))
            rows.setdefault(x, []).append((s, b, u))
    print("| target | seed | budget level | predicted | GMACs | val δ1 | uniform level | predicted | GMACs | val δ1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x, rs in rows.items():
        for s, b, u in rs:
            print(f"| {x}x | {s} | {b['level']} | {b['speedup']:.2f}x | {b['gmacs']:.3f} | {b['val_delta1']:.4f} | "
                  f"{u['level']} | {u['speedup']:.2f}x | {u['gmacs']:.3f} | {u['val_delta1']:.4f} |")
        bd = [b["val_delta1"] for _, b, _ in rs]
        ud = [u["val_delta1"] for _, _, u in rs]
        print(f"| {x}x | mean ± sd | | | | {statistics.mean(bd):.4f} ± {statistics.stdev(bd):.4f} | | | | "
              f"{statistics.mean(ud):.4f} ± {statistics.stdev(ud):.4f} |")


if __name__ == "__main__":
    main()
