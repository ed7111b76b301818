"""How well the latency table predicts ONNX Runtime: predicted vs measured p50 of channel tickets.

For one architecture and input size: build (or read) the table, then make channel masks of
random weights (uniform: every group at a density; budgeted: the allocation to a predicted
speed-up), export each at its alive widths (BN folded, as ``edgeticket export`` leaves it) and
time them all in interleaved rounds. Prints a table and writes JSON.

    python benchmarks/latency_model.py --arch fcrn_resnet18 --size 228x304 --out runs/latency_model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="fcrn_resnet18")
    ap.add_argument("--size", default="96x128")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument("--targets", default="2,4", help="predicted speed-ups of the budgeted (and matched uniform) tickets")
    ap.add_argument("--in-graph", action="store_true", help="probe each group in the whole graph and fit its factor")
    ap.add_argument("--compare-uncorrected", action="store_true",
                    help="also time budgeted tickets allocated by the table without the in-graph factors")
    ap.add_argument("--out", default="runs/latency_model")
    args = ap.parse_args()

    from edgeticket.bench.latency import alternating_pools, interleaved
    from edgeticket.bench.latency_model import Timing
    from edgeticket.export.fold import fold_batchnorm
    from edgeticket.export.onnx_export import export_onnx, ort_session
    from edgeticket.models.adapt import adapt_widths
    from edgeticket.models.macs import count_macs
    from edgeticket.models.registry import build_model
    from edgeticket.tickets.budget import LatencyBudget, prune_to_latency
    from edgeticket.tickets.criteria.channel import prune_channels
    from edgeticket.tickets.criteria.common import prunable_names, with_bn_entries
    from edgeticket.tickets.groups import build_graph, channel_groups, prunable_groups
    from edgeticket.tickets.imp import alive_widths, latency_model_for
    from edgeticket.tickets.mask import Mask

    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    m = build_model(args.arch).eval()
    scope = prunable_names(m)
    groups = prunable_groups(channel_groups(m, build_graph(m)), set(scope))
    init = with_bn_entries(Mask.ones(m, scope), groups)
    timing = Timing(threads=args.threads)
    t0 = time.perf_counter()
    lm = latency_model_for(m, groups, init, (h, w), timing, arch=args.arch, in_graph=args.in_graph,
                           remeasure=args.remeasure, progress=True)
    build_s = time.perf_counter() - t0
    budget = LatencyBudget(lm, lambda mk: alive_widths(m, mk, groups))
    # the same table without the probes' in-graph factors (a, b, p as fitted to the table alone)
    un = lm.provenance["fit"].get("uncorrected", {"a": lm.a, "b": lm.b, "p": lm.p})
    plain_lm = dataclasses.replace(lm, a=un["a"], b=un["b"], p=un["p"], factors={})
    plain_lm.dense_ms = plain_lm.predict()
    plain = LatencyBudget(plain_lm, lambda mk: alive_widths(m, mk, groups))
    weights = m.state_dict()
    cases = {"dense": init}
    for x in (float(v) for v in args.targets.split(",")):
        budget.target_ms = lm.dense_ms / x
        cases[f"budget {x:g}x"] = prune_to_latency(weights, init, groups, budget, 8).mask
        if args.compare_uncorrected and lm.factors:
            plain.target_ms = plain_lm.dense_ms / x
            cases[f"budget {x:g}x, table only"] = prune_to_latency(weights, init, groups, plain, 8).mask
        # the uniform channel ticket (every group at one fraction) with the same predicted latency, by bisection
        lo, hi = 0.01, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            if budget.predict(prune_channels(weights, init, groups, mid, 8).mask) > budget.target_ms:
                hi = mid
            else:
                lo = mid
        cases[f"uniform {x:g}x"] = prune_channels(weights, init, groups, lo, 8).mask

    tmp = Path(tempfile.mkdtemp())
    files, preds, macs = {}, {}, {}
    for name, mask in cases.items():
        wd = alive_widths(m, mask, groups)
        mm = fold_batchnorm(adapt_widths(build_model(args.arch), {k: list(v) for k, v in wd.items()}).eval())
        files[name] = tmp / (name.replace(" ", "_") + ".onnx")
        export_onnx(mm, files[name], (h, w), {})
        preds[name] = (budget.predict(mask), plain.predict(mask))
        macs[name] = count_macs(m, (h, w), wd)
    # timed as the bench times: two sessions per model made in alternating turns, ABBA rounds
    names = list(files)
    pools = alternating_pools(len(names), 2, lambda i: ort_session(files[names[i]], timing.resolved_threads(),
                                                                   timing.ort_provider(), timing.opt_level))
    measured = interleaved([(p, (h, w)) for p in pools], 1, args.rounds, args.rounds * args.runs, 3)
    times = {k: t.ravel().tolist() for k, t in zip(names, measured, strict=True)}
    rows = []
    dense_meas = statistics.median(times["dense"])
    print(f"\n{args.arch} at {h}x{w}, {timing.resolved_threads()} threads; table {'measured' if lm.provenance['measured_now'] else 'cached'} "
          f"in {build_s:.1f} s; fit a={lm.a:.2f} ms, b={lm.b:.4g}, p={lm.p:.3f}; "
          f"calibration errors {', '.join(f'{e:+.1%}' for e in lm.provenance['fit']['fit_error'])}")
    if lm.factors:
        fs = sorted(lm.factors.values())
        print(f"in-graph factors of {len(fs)} groups: min {fs[0]:.2f}, median {statistics.median(fs):.2f}, max {fs[-1]:.2f}; "
              f"table alone: a={un['a']:.2f} ms, b={un['b']:.4g}, p={un['p']:.3f}")
    print("| model | GMACs | predicted ms | measured p50 ms | p10-p90 | error | table-only error | predicted speed-up "
          "| measured speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in cases:
        t = sorted(times[k])
        p50 = statistics.median(t)
        p10, p90 = t[len(t) // 10], t[(len(t) * 9) // 10]
        pred, pred_plain = preds[k]
        err = pred / p50 - 1
        rows.append({"model": k, "macs": macs[k], "predicted_ms": pred, "predicted_table_only_ms": pred_plain,
                     "p50_ms": p50, "p10_ms": p10, "p90_ms": p90, "error": err, "table_only_error": pred_plain / p50 - 1,
                     "predicted_speedup": lm.dense_ms / pred, "measured_speedup": dense_meas / p50})
        print(f"| {k} | {macs[k] / 1e9:.3f} | {pred:.2f} | {p50:.2f} | {p10:.2f}-{p90:.2f} | {err:+.1%} | "
              f"{pred_plain / p50 - 1:+.1%} | {lm.dense_ms / pred:.2f}x | {dense_meas / p50:.2f}x |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.arch}_{h}x{w}.json").write_text(json.dumps({"build_s": build_s, "provenance": lm.provenance,
                                                                 "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
