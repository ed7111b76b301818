"""``edgeticket export``, ``bench``, ``pipeline`` and ``demo``: from a trained model to a verdict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeticket.bench.config import BenchConfig
from edgeticket.cli.common import Overwrite, Quiet, console, handled, progress_enabled
from edgeticket.cli.options import config_options
from edgeticket.export.config import ExportConfig


@handled
@config_options(export_cfg=ExportConfig)
def export(
    src: Annotated[Path, typer.Argument(help="A finetune output or a search level/branch directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for model.onnx, model.int8.onnx, export.json.")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format).")] = True,
    data: Annotated[Path | None, typer.Option("--data", help="Data for parity, calibration and INT8 drift (default: the data in SRC's meta.json).")] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    *,
    export_cfg: ExportConfig,
):
    """Compact a ticket structurally, fold BN, export ONNX with metadata, check parity, optionally INT8."""
    from edgeticket.errors import UserError
    from edgeticket.export.api import export as run

    if not onnx:
        raise UserError("--no-onnx: ONNX is the only export format.")
    r = run(src, out, export_cfg, data=data, overwrite=overwrite, progress=progress_enabled(quiet))
    b, a = r["before"], r["after"]
    typer.echo(f"{r['onnx']}: {b['macs'] / 1e9:.3f} -> {a['macs'] / 1e9:.3f} GMACs ({r['macs_ratio']:.3f}x), "
               f"{b['params'] / 1e6:.2f} -> {a['params'] / 1e6:.2f} M params; "
               f"ORT parity {max(v['max_rel'] for v in r['parity'].values()):.1e} of the output's spread")
    if "int8" in r:
        q = r["int8"]
        d = q["drift"].get("delta", {})
        typer.echo(f"{q['path']}: INT8 ({q['calib_method']}, {q['calibration_images']} train images, reduce_range "
                   f"{q['reduce_range_from']}, head {'fp32' if q['fp32_nodes'] else 'quantized'}) drift on "
                   f"{q['drift']['images']} {q['drift']['split']} images calibration never saw: "
                   + ", ".join(f"{k} {v:+.4f}" for k, v in d.items() if k in ("delta1", "rmse", "abs_rel"))
                   + f"; output moves {q['output_vs_fp32']['max_abs']:.3g} m at most")
        if "note" in q["drift"]:
            typer.echo(f"note: INT8 drift {q['drift']['note']}")
    for n in r["notes"]:
        typer.echo(f"note: {n}")


@handled
@config_options(bench_cfg=BenchConfig)
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to evaluate (the baseline is added).")],
    data: Annotated[Path, typer.Option("--data", help="A dataset folder: ground truth is read at full resolution.")],
    baseline: Annotated[Path, typer.Option("--baseline", help="The dense model every figure is set against.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.md and the plots.")],
    search_dir: Annotated[Path | None, typer.Option("--search", help="A search folder: plot its sparsity against δ1 with the branches.")] = None,
    quiet: Quiet = False,
    *,
    bench_cfg: BenchConfig,
):
    """Evaluate ONNX models with ONNX Runtime on the test split and time them, against the dense model."""
    from edgeticket import paths
    from edgeticket.bench.api import bench as run
    from edgeticket.bench.api import failed_gates

    command = "edgeticket " + " ".join(sys.argv[1:])
    report = run(models, baseline, data, out, bench_cfg, search=search_dir, progress=progress_enabled(quiet),
                 command=command)
    print_bench_table(report)
    typer.echo(f"report: {Path(out) / paths.REPORT_MD}")
    for p in report["plots"]:
        typer.echo(f"plot: {p}")
    failed = failed_gates(report)
    if failed:
        for f in failed:
            typer.echo(f"gate failed: {f}", err=True)
        raise typer.Exit(1)


def print_bench_table(report: dict) -> None:
    from rich.table import Table

    lp = report.get("latency_protocol", {})
    t = Table(title=f"ONNX Runtime {report['onnxruntime']}, {report['threads']} threads, {report['test_frames']} test "
                    f"frames, {lp.get('rounds', 1)} interleaved rounds x {lp.get('runs_per_round', '?')} runs")
    for c in ("model", "input", "δ1", "Δδ1", "rmse", "Δrmse", "p50 ms", "speedup", "95%", "GMACs", "MB"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for e in report["models"]:
        d, s, v = e["vs_baseline"]["metrics_delta"], e["size"], e["vs_baseline"]
        ci = v.get("speedup_ci")
        t.add_row(e["name"] + (" (baseline)" if e["baseline"] else ""), e.get("input_size", "–"),
                  f"{e['metrics']['delta1']:.4f}", f"{d['delta1']:+.4f}", f"{e['metrics']['rmse']:.4f}",
                  f"{d['rmse']:+.4f}", f"{e['latency_ms']['p50']:.1f}", f"{v['speedup']:.2f}x",
                  f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "–",
                  "–" if s["macs"] is None else f"{s['macs'] / 1e9:.3f}", f"{s['bytes'] / 1e6:.2f}")
    console().print(t)
    for e in report["models"]:
        if e.get("predicted_latency_ms") is not None:
            pred, p50 = e["predicted_latency_ms"], e["latency_ms"]["p50"]
            typer.echo(f"{e['name']}: predicted {pred:.2f} ms by its search's latency model, measured p50 {p50:.2f} ms "
                       f"({pred / p50 - 1:+.1%})")
        for n in e["gates"].get("within_noise", []):
            if n not in e["gates"]["failed"]:
                typer.echo(f"gate within noise: {e['path']}: {n}", err=True)


PipelineDevice = Annotated[str | None, typer.Option("--device", help="Override the config's [run] device.")]


@handled
def pipeline(
    config: Annotated[Path, typer.Argument(help="A pipeline TOML (see edgeticket/presets/).")],
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: [run] out of the config).")] = None,
    device: PipelineDevice = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
):
    """Run the whole chain from a config; finished stages are skipped on rerun, an interrupted one continues."""
    _run_pipeline(config, out, device, overwrite, quiet)


@handled
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/demo"),
    preset: Annotated[str, typer.Option("--preset", help="demo (CPU, minutes), nyu-fcrn50 (GPU, the full recipe) "
                                        "or nyu-fastdepth (GPU, FastDepth's recipe).")] = "demo",
    device: PipelineDevice = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
):
    """The whole story on synthetic rooms: data, dense model, IMP searches, baselines, best ticket, export, bench."""
    from edgeticket.pipeline import preset_path

    _run_pipeline(preset_path(preset), out, device, overwrite, quiet)


def _run_pipeline(config: Path, out: Path | None, device: str | None, overwrite: bool, quiet: bool) -> None:
    from edgeticket import paths
    from edgeticket.fsio import read_json
    from edgeticket.pipeline import run_pipeline

    state = run_pipeline(config, out, device=device, overwrite=overwrite, progress=progress_enabled(quiet),
                         log=lambda m: typer.echo(m, err=True))
    bench_info = state["stages"]["bench"]
    report = read_json(Path(bench_info["report"]).parent / paths.REPORT_JSON)
    print_bench_table(report)
    typer.echo(f"report: {bench_info['report']}")
    for p in bench_info["plots"]:
        typer.echo(f"plot: {p}")
