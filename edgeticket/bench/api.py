"""``edgeticket bench``: accuracy and latency of ONNX models against the dense baseline.

report.json schema (``schema`` = 1, stable; fields are only ever added):

    {"schema": 1, "command": str, "created": str,
     "machine": {"cpu": str, "cores_physical": int, "cores_logical": int, "platform": str,
                 "isa": {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon": bool}},
     "versions": {...}, "onnxruntime": str, "provider": str, "graph_optimization": str,
     "threads": int, "session": {"intra_op_threads", "inter_op_threads", "execution_mode", "allow_spinning"},
     "latency_protocol": {"rounds", "runs_per_round", "runs", "warmup", "order", "sessions_per_model", "interval", "gate_strict"},
     "memory_estimate": {"weights", "batch", "total", "available": bytes}, "data": str, "test_frames": int,
     "baseline": str,
     "models": [{"path": str, "name": str, "baseline": bool, "input_size": "HxW",
                 "metrics": {abs_rel, sq_rel, rmse, rmse_log, log10, delta1, delta2, delta3,
                             nonfinite (non-finite predicted pixels, scored as BTS does)},
                 "latency_ms": {"p50", "p90", "mean", "min"},
                 "latency": {"batch1": {..., "p50_ci": [lo, hi], "rounds", "runs_per_round", "sessions", "bootstrap"},
                             "batchN": {...}},
                 "throughput_img_s": {"batch1": float, "batchN": float},
                 "size": {"bytes", "params", "macs", "sparsity" (effective: masked or in a dead channel),
                          "sparsity_unstructured" (the mask's zeros), "sparsity_structural"},
                 "predicted_latency_ms" (a latency-budgeted search's prediction, from the metadata, or null),
                 "info": {"arch", "level", "criterion", "branch", "precision", "preprocess"},
                 "vs_baseline": {"speedup", "speedup_ci": [lo, hi], "speedup_batch", "size_ratio", "macs_ratio",
                                 "params_ratio", "metrics_delta": {metric: model - baseline}},
                 "gates": {"passed": bool, "failed": [str], "within_noise": [str]}}],
     "gates": [str], "plots": [str]}
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from edgeticket import paths
from edgeticket.bench import plots
from edgeticket.bench.config import BenchConfig
from edgeticket.bench.evaluate import OnnxModel, evaluate_models, open_model
from edgeticket.bench.gates import judge_gates
from edgeticket.bench.latency import (
    BOOTSTRAP,
    alternating_pools,
    cpu_model,
    interleaved,
    isa_flags,
    latency_stats,
    physical_cores,
    speedup_with_interval,
)
from edgeticket.bench.memory import check_bench_memory
from edgeticket.errors import UserError
from edgeticket.fsio import versions, write_json, write_text
from edgeticket.train.metrics import METRIC_KEYS

SCHEMA = 1


def model_name(path: str) -> str:
    """A short label: the export folder's name (and 'int8' for a quantized file)."""
    p = Path(path)
    base = p.parent.name or p.stem
    return f"{base} int8" if ".int8" in p.name else base


def resolve_provider(name: str) -> str:
    import onnxruntime as ort

    if name == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "CUDAExecutionProvider"
        print("bench: CUDAExecutionProvider is not available; using the CPU.", file=sys.stderr)
    elif name != "cpu":
        raise UserError(f"--provider {name!r}: choose cpu or cuda.")
    return "CPUExecutionProvider"


def bench(models: list[str | Path], baseline: str | Path, data: str | Path, out: str | Path,
          config: BenchConfig | None = None, *, search: str | Path | None = None, progress: bool = True,
          command: str = "") -> dict:
    """Evaluate and time ``models`` against ``baseline``; write report.{json,md} and plots into ``out``.

    ``out`` is empty or an earlier bench report (whose files are replaced); it may not hold or lie
    in the data, a model or the search."""
    from edgeticket.runs import claimed

    out, data = Path(out), Path(data)
    inputs = {"data folder": data, "search": search, "baseline": baseline,
              **{f"model {m}": m for m in models}}
    with claimed(out, "bench", overwrite=True, resume_option=None, overwrite_option=None, inputs=inputs,
                 stage=True) as claim:
        report = _bench(models, baseline, data, out, config, search, progress, command)
        claim.mark()
        return report


def _bench(models, baseline, data: Path, out: Path, config, search, progress: bool, command: str) -> dict:
    cfg = config or BenchConfig()
    gates = cfg.gate
    threads = cfg.threads or physical_cores()
    cfg = cfg.replace(threads=threads)
    prov = resolve_provider(cfg.provider)
    baseline = str(baseline)
    paths_in = [baseline] + [str(m) for m in models if Path(m).resolve() != Path(baseline).resolve()]
    opened: list[OnnxModel] = [open_model(p, cfg, prov) for p in paths_in]
    memory = check_bench_memory(paths_in, cfg.batch_size, sessions_per_model(cfg))  # before a batch or the timed sessions
    base = opened[0]
    batch_size = cfg.batch_size

    metrics, panel = evaluate_models(opened, data, batch_size=batch_size, limit=cfg.limit, progress=progress,
                                     keep_frames=cfg.panel_frames)
    lat1, latb = _latency(opened, cfg)
    entries = [_entry(m, met, l1, lb) for m, met, l1, lb in zip(opened, metrics, lat1, latb, strict=True)]
    entries[0]["baseline"] = True
    for k, e in enumerate(entries):
        e["vs_baseline"] = _versus(e, entries[0])
        e["vs_baseline"]["speedup"], e["vs_baseline"]["speedup_ci"] = speedup_with_interval(
            lat1[0]["_times"], lat1[k]["_times"], seed=k, sessions=lat1[0]["sessions"])
        failed, noisy = judge_gates(gates, e, cfg.gate_strict) if not e["baseline"] else ([], [])
        if e["metrics"]["nonfinite"]:  # a NaN or inf depth is a broken model, whatever the gates ask
            failed = [f"nonfinite={e['metrics']['nonfinite']}: the model predicted non-finite depth (NaN or inf) "
                      f"on {e['metrics']['nonfinite']} pixels", *failed]
        e["gates"] = {"passed": not failed, "failed": failed, "within_noise": noisy}
    for e in entries:
        for lat in e["latency"].values():
            lat.pop("_times", None)

    import onnxruntime as ort

    report = {
        "schema": SCHEMA,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": cpu_model(), "cores_physical": physical_cores(), "cores_logical": os.cpu_count(),
                    "platform": platform.platform(), "isa": isa_flags()},
        "versions": versions(),
        "onnxruntime": ort.__version__,
        "provider": prov,
        "graph_optimization": cfg.opt_level,
        "threads": threads,
        "session": {"intra_op_threads": threads, "inter_op_threads": 1, "execution_mode": "sequential",
                    "allow_spinning": cfg.spin},
        "latency_protocol": {"rounds": cfg.rounds, "runs_per_round": lat1[0]["runs_per_round"],
                             "runs": lat1[0]["runs"], "warmup": cfg.warmup, "order": "shuffled per round",
                             "sessions_per_model": lat1[0]["sessions"],
                             "interval": f"bootstrap 95% over {lat1[0]['bootstrap']} ({BOOTSTRAP} resamples)",
                             "gate_strict": cfg.gate_strict},
        "memory_estimate": memory,
        "data": str(data),
        "test_frames": metrics[0].get("n_images", 0),
        "baseline": base.path,
        "models": entries,
        "gates": [str(g) for g in gates],
    }
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = _plots(entries, panel, out, search)
    write_json(out / paths.REPORT_JSON, report)
    write_text(out / paths.REPORT_MD, markdown(report))
    return report


def sessions_per_model(cfg: BenchConfig) -> int:
    """``cfg.sessions``, but at most one a round."""
    return max(1, min(cfg.sessions, cfg.rounds))


def session_pools(models: list[OnnxModel], cfg: BenchConfig, seed: int = 0) -> list[list]:
    """Fresh sessions of every model's file, made with the same settings, ``sessions_per_model``
    each, in alternating turns (``bench.latency.alternating_pools``). The evaluation sessions are
    not timed."""
    from edgeticket.export.onnx_export import ort_session

    def make(k: int):
        m = models[k]
        return ort_session(m.path, cfg.threads, m.sess.get_providers()[0], cfg.opt_level, cfg.spin)

    return alternating_pools(len(models), sessions_per_model(cfg), make, seed)


def _latency(models: list[OnnxModel], cfg: BenchConfig) -> tuple[list[dict], list[dict]]:
    """Batch-1 latency of every model in interleaved rounds; then the batched figure, interleaved
    among the models that take a dynamic batch (the others repeat their batch-1 figure)."""
    pools = session_pools(models, cfg)
    t1 = interleaved([(pool, m.pre.input_size) for pool, m in zip(pools, models, strict=True)], 1, cfg.rounds,
                     cfg.runs, cfg.warmup)
    n = len(pools[0])
    lat1 = [{**latency_stats(t, 1, seed=k, sessions=n), "_times": t} for k, t in enumerate(t1)]
    latb = list(lat1)
    batched = [k for k, m in enumerate(models) if m.fixed_batch is None] if cfg.batch_size > 1 else []
    if batched:
        tb = interleaved([(pools[k], models[k].pre.input_size) for k in batched], cfg.batch_size,
                         min(cfg.rounds, max(1, cfg.runs // 5)), max(3, cfg.runs // 5), max(1, cfg.warmup // 2))
        for k, t in zip(batched, tb, strict=True):
            latb[k] = latency_stats(t, cfg.batch_size, seed=k, sessions=n)
    return lat1, latb


def _entry(m: OnnxModel, met: dict, lat1: dict, latb: dict) -> dict:
    c = m.card
    return {
        "path": m.path,
        "name": model_name(m.path),
        "baseline": False,
        "metrics": {k: met[k] for k in (*METRIC_KEYS, "nonfinite")},
        "latency_ms": {k: lat1[k] for k in ("p50", "p90", "mean", "min")},
        "latency": {"batch1": lat1, f"batch{latb['batch']}": latb},
        "throughput_img_s": {"batch1": lat1["images_per_s"], f"batch{latb['batch']}": latb["images_per_s"]},
        "size": {"bytes": m.bytes, "params": c and c.params, "macs": c and c.macs,
                 "sparsity": c and (c.sparsity if c.sparsity is not None else c.sparsity_unstructured),
                 "sparsity_unstructured": c and c.sparsity_unstructured,
                 "sparsity_structural": c and c.sparsity_structural},
        "input_size": str(m.pre.input_size),
        "predicted_latency_ms": c and c.predicted_latency_ms,
        "info": {"arch": c and c.arch, "level": c and c.level, "criterion": c and c.criterion,
                 "branch": c and c.branch, "precision": c.precision if c else "fp32",
                 "preprocess": {"input_size": str(m.pre.input_size), "mean": m.pre.mean, "std": m.pre.std,
                                "from": m.pre.source}},
    }


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _versus(e: dict, base: dict) -> dict:
    lb = [k for k in e["latency"] if k != "batch1"]
    return {
        "speedup": base["latency_ms"]["p50"] / e["latency_ms"]["p50"],
        "speedup_batch": (base["latency"][lb[0]]["p50"] / e["latency"][lb[0]]["p50"]) if lb and lb[0] in base["latency"] else None,
        "size_ratio": e["size"]["bytes"] / base["size"]["bytes"],
        "macs_ratio": _ratio(e["size"]["macs"], base["size"]["macs"]),
        "params_ratio": _ratio(e["size"]["params"], base["size"]["params"]),
        "metrics_delta": {k: e["metrics"][k] - base["metrics"][k] for k in METRIC_KEYS},
    }


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _ci(ci, spec: str) -> str:
    return "–" if not ci else f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def markdown(report: dict) -> str:
    m0 = report["machine"]
    lp = report.get("latency_protocol", {})
    isa = ", ".join(k for k, v in m0.get("isa", {}).items() if v) or "none listed"
    lines = [
        "# edgeticket bench\n",
        f"`{report['command']}`  \n" if report["command"] else "",
        f"{m0['cpu']} (ISA: {isa}), {report['threads']} intra-op threads, 1 inter-op, spinning "
        f"{'on' if report.get('session', {}).get('allow_spinning', True) else 'off'}; ONNX Runtime {report['onnxruntime']} "
        f"({report['provider']}, graph optimisation {report['graph_optimization']}); {report['test_frames']} test frames "
        f"of {report['data']}.  \n",
        f"Latency: {lp.get('rounds', 1)} interleaved rounds x {lp.get('runs_per_round', '?')} runs per model after "
        f"{lp.get('warmup', 0)} warm-up runs, order shuffled per round; intervals are {lp.get('interval', '–')}.\n",
        "| model | input | δ1 | Δδ1 | rmse | Δrmse | abs_rel | p50 ms | p50 95% | p90 ms | speedup | speedup 95% | img/s (b1) "
        "| GMACs | MACs ratio | MB | sparsity (effective/struct.) | gates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["models"]:
        v, s, d = e["vs_baseline"], e["size"], e["vs_baseline"]["metrics_delta"]
        name = f"**{e['name']}** (baseline)" if e["baseline"] else e["name"]
        gates = "–" if e["baseline"] or not report["gates"] else ("pass" if e["gates"]["passed"] else "FAIL: " + "; ".join(e["gates"]["failed"]))
        noisy = [n for n in e["gates"].get("within_noise", []) if n not in e["gates"]["failed"]]
        if noisy:
            gates += " (" + "; ".join(noisy) + ")"
        lines.append(
            f"| {name} | {e.get('input_size', '–')} | {e['metrics']['delta1']:.4f} | {d['delta1']:+.4f} | "
            f"{e['metrics']['rmse']:.4f} | {d['rmse']:+.4f} | {e['metrics']['abs_rel']:.4f} | {e['latency_ms']['p50']:.1f} | "
            f"{_ci(e['latency']['batch1'].get('p50_ci'), '.1f')} | {e['latency_ms']['p90']:.1f} | {v['speedup']:.2f}x | "
            f"{_ci(v.get('speedup_ci'), '.2f')} | {e['throughput_img_s']['batch1']:.1f} | "
            f"{_fmt(s['macs'] and s['macs'] / 1e9, '.3f')} | {_fmt(v['macs_ratio'], '.3f')} | "
            f"{s['bytes'] / 1e6:.2f} | {_fmt(s['sparsity'], '.2f')} / {_fmt(s['sparsity_structural'], '.2f')} | {gates} |"
        )
    lines.append("")
    lines.append("Speedup is the baseline's p50 over the model's (batch 1); its interval comes from the same resampled "
                 "rounds for both (paired). A gate decides on the point and says \"within noise\" when the interval "
                 "straddles its threshold (--gate-strict decides on the far end). Unstructured sparsity gives ONNX "
                 "Runtime no speed: only removed channels (structural sparsity) and INT8 do.")
    lines += predicted_lines(report)
    if report.get("plots"):
        lines.append("")
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def predicted_lines(report: dict) -> list[str]:
    """Predicted (a latency-budgeted search's model, from the ONNX metadata) against measured p50."""
    rows = [e for e in report["models"] if e.get("predicted_latency_ms") is not None]
    if not rows:
        return []
    out = ["", "| model | predicted ms | measured p50 ms | error |", "|---|---|---|---|"]
    for e in rows:
        pred, p50 = e["predicted_latency_ms"], e["latency_ms"]["p50"]
        out.append(f"| {e['name']} | {pred:.2f} | {p50:.2f} | {pred / p50 - 1:+.1%} |")
    return out


def _plots(entries: list[dict], panel: dict, out: Path, search: str | Path | None) -> list[str]:
    written = []
    if any(e.get("predicted_latency_ms") is not None for e in entries):
        p = out / paths.PLOT_LATENCY_MODEL
        plots.predicted_vs_measured(entries, p)
        written.append(str(p))
    p = out / paths.PLOT_ACCURACY_LATENCY
    plots.accuracy_vs_latency(entries, p)
    written.append(str(p))
    rows = [{"sparsity": e["size"]["sparsity"] or 0.0, "delta1": e["metrics"]["delta1"],
             "family": _family(e["info"]["branch"]), "criterion": e["info"].get("criterion") or ""} for e in entries
            if e["info"].get("level") not in (None, "") and e["info"].get("precision") == "fp32"]
    if search is not None:
        from edgeticket.fsio import read_json
        from edgeticket.tickets.summary import branch_family, collect_rows

        def criterion(folder: str) -> str:
            meta = Path(folder) / paths.META
            return (read_json(meta).get("criterion") or "") if meta.exists() else ""

        rows = [{"sparsity": r["sparsity"], "delta1": r["test"].get("delta1"),
                 "family": branch_family(r["branch"]) or "ticket", "criterion": criterion(r["path"])}
                for r in collect_rows(Path(search)) if r["test"]]
        title = f"search {search}: test δ1 (PyTorch) by level and branch"
    else:
        title = "benched tickets: test δ1 (ONNX Runtime)"
    if rows:
        p = out / paths.PLOT_SPARSITY_DELTA1
        plots.sparsity_vs_delta1(rows, p, title)
        written.append(str(p))
    if panel["rgb"]:
        p = out / paths.PLOT_PREDICTIONS
        order = [0] + ([min(range(1, len(entries)), key=lambda i: entries[i]["latency_ms"]["p50"])] if len(entries) > 1 else [])
        sub = {"rgb": panel["rgb"], "gt": panel["gt"], "frames": panel["frames"], "pred": [panel["pred"][i] for i in order]}
        plots.prediction_panel(sub, [entries[i]["name"] for i in order], p)
        written.append(str(p))
    return written


def _family(branch: str | None) -> str:
    from edgeticket.tickets.summary import branch_family

    return branch_family(branch or "") or "ticket"


def failed_gates(report: dict) -> list[str]:
    return [f"{e['path']}: {f}" for e in report["models"] for f in e["gates"]["failed"]]
