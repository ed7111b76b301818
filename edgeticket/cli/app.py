"""The ``edgeticket`` command: thin Typer commands over the Python API.

``data`` and ``tickets`` are command groups; ``search``, ``finetune``, ``export``, ``bench``,
``demo`` and ``pipeline`` are plain commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeticket import __version__
from edgeticket.cli.common import (
    Amp,
    Arch,
    BatchSize,
    Compile,
    CompileMode,
    DecoderLrMult,
    Device,
    InputSize,
    Loss,
    Lr,
    NoAugment,
    Optimizer,
    Overwrite,
    Pretrained,
    Quiet,
    Resume,
    Schedule,
    Seed,
    ValFraction,
    Warmup,
    WeightDecay,
    console,
    handled,
    parse_input_size,
    print_metrics_table,
    progress_enabled,
    train_config,
)

app = typer.Typer(
    name="edgeticket",
    help="Lottery tickets for monocular depth: IMP search on FCRN, fine-tuning on NYU Depth v2, "
         "structural compaction, ONNX export and an ONNX Runtime benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
data_app = typer.Typer(help="Datasets: synthetic rooms, NYU download, the training cache.", no_args_is_help=True)
tickets_app = typer.Typer(help="Tickets: import published masks, branch baselines, refill, show.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tickets_app, name="tickets")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeticket {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """edgeticket: find, fine-tune, compact, export and benchmark lottery tickets of FCRN depth models."""


# -- data ----------------------------------------------------------------------------------------

@data_app.command("synth")
@handled
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write nyu_depth_v2_labeled.mat and splits.mat into.")],
    n: Annotated[int | None, typer.Option("--n", help="Number of frames (at least 8).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same frames.")] = 0,
    preset: Annotated[str | None, typer.Option("--preset", help="small (64 frames) or nyu (1,449 frames).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Render processes (default: all cores).")] = None,
    quiet: Quiet = False,
):
    """Render procedural indoor rooms in NYU Depth v2's official file layout."""
    from edgeticket.data.synth import PRESETS, write_synthetic
    from edgeticket.errors import UserError

    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    frames = n if n is not None else PRESETS[preset or "nyu"]
    stats = write_synthetic(out, frames, seed, progress=progress_enabled(quiet), workers=workers)
    typer.echo(f"wrote {stats['n']} frames ({stats['n_train']} train / {stats['n_test']} test) to {out} "
               f"in {stats['seconds']:.1f} s ({stats['frames_per_s']:.1f} frames/s)")


@data_app.command("prepare")
@handled
def data_prepare(
    src: Annotated[Path, typer.Argument(help="A dataset folder: the official labeled .mat or nyu2 PNGs.")],
    out: Annotated[Path, typer.Option("--out", help="The cache folder to write.")],
    input_size: InputSize = "228x304",
    val_fraction: ValFraction = 0.1,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
):
    """Convert a dataset into a training cache (one HDF5 per split at the input size, full-resolution val/test depth)."""
    from edgeticket.data.prepare import prepare
    from edgeticket.fsio import read_json

    root = prepare(src, out, parse_input_size(input_size), val_fraction, seed, progress=progress_enabled(quiet),
                   overwrite=overwrite)
    meta = read_json(root / "cache.json")
    typer.echo(f"cache {root}: {meta['counts']} at {input_size}; split: {meta['split_origin']}")


@data_app.command("fetch")
@handled
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="nyu: NYU Depth v2 labeled (2.8 GB) and its official split.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to download into (partial downloads resume).")],
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 of nyu_depth_v2_labeled.mat, if you have one.")] = None,
    url: Annotated[list[str] | None, typer.Option("--url", help="NAME=URL to download NAME from a mirror.")] = None,
    quiet: Quiet = False,
):
    """Download NYU Depth v2 (labeled .mat and splits.mat), resuming and checking them."""
    from edgeticket.data.fetch import fetch_nyu
    from edgeticket.errors import UserError

    if dataset != "nyu":
        raise UserError(f"dataset {dataset!r}: only 'nyu' can be fetched.")
    urls = {}
    for item in url or []:
        if "=" not in item:
            raise UserError(f"--url {item!r}: write NAME=URL, e.g. splits.mat=http://mirror/splits.mat.")
        k, v = item.split("=", 1)
        urls[k] = v
    res = fetch_nyu(out, base_urls=urls or None, sha256=sha256, progress=progress_enabled(quiet))
    for name, r in res.items():
        typer.echo(f"{name}: {r['status']}, {r['bytes']} bytes, sha256 {r['sha256']}")


# -- finetune --------------------------------------------------------------------------------------

@app.command()
@handled
def finetune(
    data: Annotated[Path, typer.Option("--data", help="A dataset folder (official layout or nyu2 PNGs) or a prepared cache.")],
    out: Annotated[Path, typer.Option("--out", help="The model directory to write.")],
    arch: Arch = "fcrn_resnet50",
    pretrained: Pretrained = "imagenet",
    mask: Annotated[Path | None, typer.Option("--mask", help="A ticket: mask.pt or a search level/branch directory.")] = None,
    input_size: InputSize = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 20,
    device: Device = "cpu",
    resume: Resume = False,
    overwrite: Overwrite = False,
    batch_size: BatchSize = 16,
    lr: Lr = 0.01,
    decoder_lr_mult: DecoderLrMult = 10.0,
    optimizer: Optimizer = "sgd",
    weight_decay: WeightDecay = 1e-4,
    schedule: Schedule = "cosine",
    warmup_epochs: Warmup = 1.0,
    loss: Loss = "berhu",
    no_augment: NoAugment = False,
    seed: Seed = 0,
    val_fraction: ValFraction = 0.1,
    compile_: Compile = False,
    compile_mode: CompileMode = "default",
    amp: Amp = "auto",
    quiet: Quiet = False,
):
    """Fine-tune a dense FCRN or a ticket on NYU Depth v2 (berHu loss); torchrun for several GPUs."""
    from edgeticket.tickets.mask import Mask, describe_ticket
    from edgeticket.train.finetune import finetune as run

    cfg = train_config(epochs, batch_size, lr, decoder_lr_mult, optimizer, weight_decay, schedule, warmup_epochs,
                       loss, no_augment, seed, compile_, compile_mode, amp)
    ticket = Mask.load(mask) if mask is not None else None
    res = run(data, arch, out, cfg, pretrained=pretrained, mask=ticket,
              extra_meta=describe_ticket(mask, ticket) if ticket is not None else None,
              input_size=parse_input_size(input_size), val_fraction=val_fraction, device=device, resume=resume,
              overwrite=overwrite, progress=progress_enabled(quiet))
    from edgeticket.train import distributed as D

    if D.current().is_main:
        print_metrics_table(f"{arch} -> {out} (best epoch {res.best_epoch + 1}, {res.images_per_s:.1f} img/s)",
                            [("val", res.val), ("test", res.test)])


# -- search ------------------------------------------------------------------------------------------

@app.command()
@handled
def search(
    data: Annotated[Path, typer.Option("--data", help="A dataset folder or a prepared cache.")],
    out: Annotated[Path, typer.Option("--out", help="The search folder: level_00 .. level_{N-1}.")],
    arch: Arch = "fcrn_resnet50",
    pretrained: Pretrained = "imagenet",
    levels: Annotated[int, typer.Option("--levels", help="Number of levels; level 0 is the dense model.")] = 5,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs per level.")] = 20,
    criterion: Annotated[str, typer.Option("--criterion", help="magnitude-global, magnitude-layerwise or channel.")] = "magnitude-global",
    input_size: InputSize = "228x304",
    device: Device = "cpu",
    resume: Resume = False,
    overwrite: Overwrite = False,
    rate: Annotated[float, typer.Option("--rate", help="Fraction of what is still alive pruned per level.")] = 0.2,
    target_sparsity: Annotated[float | None, typer.Option("--target-sparsity", help="Stop once a level reaches this sparsity.")] = None,
    scope: Annotated[str, typer.Option("--scope", help="encoder, decoder or all (the decoder holds most of FCRN's MACs).")] = "all",
    include_conv1: Annotated[bool, typer.Option("--include-conv1", help="Also prune the encoder's first conv.")] = False,
    round_to: Annotated[int, typer.Option("--round-to", help="Channel tickets keep widths that are multiples of this.")] = 8,
    rewind: Annotated[str, typer.Option("--rewind", help="pretrained, init, epoch:K or step:K.")] = "pretrained",
    batch_size: BatchSize = 16,
    lr: Lr = 0.01,
    decoder_lr_mult: DecoderLrMult = 10.0,
    optimizer: Optimizer = "sgd",
    weight_decay: WeightDecay = 1e-4,
    schedule: Schedule = "cosine",
    warmup_epochs: Warmup = 1.0,
    loss: Loss = "berhu",
    no_augment: NoAugment = False,
    seed: Seed = 0,
    val_fraction: ValFraction = 0.1,
    compile_: Compile = False,
    compile_mode: CompileMode = "default",
    amp: Amp = "auto",
    quiet: Quiet = False,
):
    """Iterative magnitude pruning with rewinding: unstructured or channel tickets, level by level."""
    from edgeticket.tickets.imp import SearchConfig
    from edgeticket.tickets.imp import search as run
    from edgeticket.tickets.summary import format_table
    from edgeticket.train import distributed as D

    cfg = SearchConfig(arch=arch, pretrained=pretrained, levels=levels, rate=rate, criterion=criterion, scope=scope,
                       include_conv1=include_conv1, round_to=round_to, rewind=rewind, target_sparsity=target_sparsity,
                       input_size=parse_input_size(input_size) or (228, 304), val_fraction=val_fraction,
                       train=train_config(epochs, batch_size, lr, decoder_lr_mult, optimizer, weight_decay, schedule,
                                          warmup_epochs, loss, no_augment, seed, compile_, compile_mode, amp))
    summary = run(data, cfg, out, device=device, resume=resume, overwrite=overwrite, progress=progress_enabled(quiet))
    if D.current().is_main:
        typer.echo(format_table(summary["rows"]))
        typer.echo(f"summary: {Path(out) / 'summary.md'}, plot: {Path(out) / 'sparsity.png'}")


# -- tickets ----------------------------------------------------------------------------------------

@tickets_app.command("import")
@handled
def tickets_import(
    path: Annotated[Path, typer.Argument(help="A mask dict {name.weight_mask: tensor} or a torch.nn.utils.prune checkpoint (.pth, .pth.tar).")],
    arch: Arch = "fcrn_resnet50",
    out: Annotated[Path, typer.Option("--out", help="Folder to write mask.pt into.")] = Path("ticket"),
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Load a file that needs pickle (it can run code): only for files you trust.")] = False,
):
    """Import a published ImageNet ticket onto an FCRN's encoder (the decoder stays dense)."""
    from edgeticket import paths
    from edgeticket.fsio import sha256_file, versions, write_json
    from edgeticket.tickets.formats import import_ticket

    mask, notes = import_ticket(path, arch, allow_pickle)
    mask.save(out / paths.MASK)
    write_json(out / paths.META, {"arch": arch, "criterion": "imported", "level": None, "branch": "",
                                  "imported_from": str(path), "source_sha256": sha256_file(path), "notes": notes,
                                  "versions": versions()})
    write_json(out / paths.SPARSITY, mask.report())
    for n in notes:
        typer.echo(f"note: {n}")
    _show(mask, f"{out / paths.MASK} (from {path})")


@tickets_app.command("show")
@handled
def tickets_show(path: Annotated[Path, typer.Argument(help="mask.pt, or a directory holding one.")],
                 as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False):
    """Print a ticket's per-layer and total sparsity."""
    from edgeticket.tickets.mask import Mask

    mask = Mask.load(path)
    if as_json:
        typer.echo(json.dumps(mask.report(), indent=2))
    else:
        _show(mask, str(path))


def _show(mask, title: str) -> None:
    from rich.table import Table

    rep = mask.report()
    t = Table(title=title)
    for c in ("layer", "shape", "sparsity", "channels alive"):
        t.add_column(c, justify="left" if c in ("layer", "shape") else "right")
    for name, r in rep["layers"].items():
        t.add_row(name, "x".join(map(str, r["shape"])), f"{r['sparsity']:.3f}", f"{r['channels_alive']}/{r['channels']}")
    tot = rep["total"]
    t.add_row("total", f"{tot['weights']} weights", f"{tot['sparsity']:.3f}", f"{tot['channels_alive']}/{tot['channels']}")
    console().print(t)


@tickets_app.command("branch")
@handled
def tickets_branch(
    kind: Annotated[str, typer.Argument(help="random, reverse, reinit or oneshot.")],
    search_dir: Annotated[Path, typer.Argument(help="The search's --out folder.")],
    level: Annotated[int, typer.Option("--level", help="The level to branch from.")],
    seeds: Annotated[int, typer.Option("--seeds", help="random: one branch per seed.")] = 3,
    global_: Annotated[bool, typer.Option("--global", help="random: one global draw instead of per layer.")] = False,
    sparsity: Annotated[float | None, typer.Option("--sparsity", help="oneshot: the target sparsity.")] = None,
    device: Device = "cpu",
    quiet: Quiet = False,
):
    """Train a baseline beside a level: random pruning, the reverse mask, re-initialisation or one-shot pruning."""
    from edgeticket.errors import UserError
    from edgeticket.tickets.branches import run_branches

    if kind == "refill":
        raise UserError("refill has its own command: edgeticket tickets refill DIR --level NN.")
    for r in run_branches(search_dir, level, kind, seeds=seeds, per_layer=not global_, sparsity=sparsity,
                          device=device, progress=progress_enabled(quiet)):
        typer.echo(f"{r['branch']}: {r['status']} -> {r['path']}")
    typer.echo(f"summary: {search_dir / 'summary.md'}")


@tickets_app.command("refill")
@handled
def tickets_refill(
    search_dir: Annotated[Path, typer.Argument(help="The search's --out folder (an unstructured search).")],
    level: Annotated[int, typer.Option("--level", help="The level whose ticket to refill.")],
    budget: Annotated[float | None, typer.Option("--budget", help="Fraction of each group's channels to keep (default: sqrt of the ticket's density).")] = None,
    device: Device = "cpu",
    quiet: Quiet = False,
):
    """Turn an unstructured ticket into a channel ticket (group-aware IMP-Refill) and train it as branch_refill."""
    from edgeticket.tickets.branches import run_branches

    for r in run_branches(search_dir, level, "refill", budget=budget, device=device, progress=progress_enabled(quiet)):
        typer.echo(f"{r['branch']}: {r['status']} -> {r['path']}")


# -- export ------------------------------------------------------------------------------------------

@app.command()
@handled
def export(
    src: Annotated[Path, typer.Argument(help="A finetune output or a search level/branch directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for model.onnx, model.int8.onnx, export.json.")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format).")] = True,
    compact: Annotated[bool | None, typer.Option("--compact/--no-compact", help="Remove dead channels first (default: on for channel tickets).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write a static QDQ INT8 model, calibrated on training images.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Data for parity, calibration and INT8 drift (default: the data in SRC's meta.json).")] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", help="INT8 calibration images.")] = 64,
    simplify: Annotated[bool, typer.Option("--simplify", help="Run onnxslim, kept only where parity holds.")] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
):
    """Compact a ticket structurally, fold BN, export ONNX with metadata, check parity, optionally INT8."""
    from edgeticket.errors import UserError
    from edgeticket.export.api import export as run

    if not onnx:
        raise UserError("--no-onnx: ONNX is the only export format.")
    if calib_images < 1:
        raise UserError(f"--calib-images {calib_images}: give at least 1.")
    r = run(src, out, compact_model=compact, int8=int8, data=data, calib_images=calib_images, simplify=simplify,
            overwrite=overwrite, progress=progress_enabled(quiet))
    b, a = r["before"], r["after"]
    typer.echo(f"{r['onnx']}: {b['macs'] / 1e9:.3f} -> {a['macs'] / 1e9:.3f} GMACs ({r['macs_ratio']:.3f}x), "
               f"{b['params'] / 1e6:.2f} -> {a['params'] / 1e6:.2f} M params; "
               f"ORT parity {max(v['max_rel'] for v in r['parity'].values()):.1e} relative")
    if "int8" in r:
        d = r["int8"]["drift"].get("delta", {})
        typer.echo(f"{r['int8']['path']}: INT8 drift on {r['int8']['drift']['split']}: "
                   + ", ".join(f"{k} {v:+.4f}" for k, v in d.items() if k in ("delta1", "rmse", "abs_rel")))
    for n in r["notes"]:
        typer.echo(f"note: {n}")


# -- bench ------------------------------------------------------------------------------------------

@app.command()
@handled
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to evaluate (the baseline is added).")],
    data: Annotated[Path, typer.Option("--data", help="A dataset folder: ground truth is read at full resolution.")],
    baseline: Annotated[Path, typer.Option("--baseline", help="The dense model every figure is set against.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.md and the plots.")],
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per model (after warm-up).")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up runs.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch for accuracy and the second latency figure.")] = 8,
    threads: Annotated[int | None, typer.Option("--threads", help="Intra-op threads (default: physical cores).")] = None,
    provider: Annotated[str, typer.Option("--provider", help="cpu or cuda (CUDAExecutionProvider when present).")] = "cpu",
    opt_level: Annotated[str, typer.Option("--opt-level", help="ORT graph optimisation: disable, basic, extended, all.")] = "all",
    gate: Annotated[str | None, typer.Option("--gate", help='e.g. "delta1_drop<=0.01,speedup>=2": exit 1 when a model fails.')] = None,
    input_size: Annotated[str | None, typer.Option("--input-size", help="For models without metadata: HEIGHTxWIDTH.")] = None,
    mean: Annotated[str | None, typer.Option("--mean", help="For models without metadata: r,g,b.")] = None,
    std: Annotated[str | None, typer.Option("--std", help="For models without metadata: r,g,b.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N test frames.")] = None,
    search_dir: Annotated[Path | None, typer.Option("--search", help="A search folder: plot its sparsity against δ1 with the branches.")] = None,
    quiet: Quiet = False,
):
    """Evaluate ONNX models with ONNX Runtime on the test split and time them, against the dense model."""
    from edgeticket.bench.api import bench as run
    from edgeticket.bench.api import failed_gates

    command = "edgeticket " + " ".join(sys.argv[1:])
    report = run([str(m) for m in models], str(baseline), data, out, runs=runs, warmup=warmup, batch_size=batch_size,
                 threads=threads, provider=provider, opt_level=opt_level, gate=gate, input_size=input_size, mean=mean,
                 std=std, limit=limit, search=search_dir, progress=progress_enabled(quiet), command=command)
    print_bench_table(report)
    typer.echo(f"report: {Path(out) / 'report.md'}")
    for p in report["plots"]:
        typer.echo(f"plot: {p}")
    failed = failed_gates(report)
    if failed:
        for f in failed:
            typer.echo(f"gate failed: {f}", err=True)
        raise typer.Exit(1)


def print_bench_table(report: dict) -> None:
    from rich.table import Table

    t = Table(title=f"ONNX Runtime {report['onnxruntime']}, {report['threads']} threads, {report['test_frames']} test frames")
    for c in ("model", "δ1", "Δδ1", "rmse", "Δrmse", "p50 ms", "speedup", "GMACs", "MB"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for e in report["models"]:
        d, s = e["vs_baseline"]["metrics_delta"], e["size"]
        t.add_row(e["name"] + (" (baseline)" if e["baseline"] else ""), f"{e['metrics']['delta1']:.4f}",
                  f"{d['delta1']:+.4f}", f"{e['metrics']['rmse']:.4f}", f"{d['rmse']:+.4f}",
                  f"{e['latency_ms']['p50']:.1f}", f"{e['vs_baseline']['speedup']:.2f}x",
                  "–" if s["macs"] is None else f"{s['macs'] / 1e9:.3f}", f"{s['bytes'] / 1e6:.2f}")
    console().print(t)


# -- demo and pipeline -------------------------------------------------------------------------

@app.command()
@handled
def pipeline(
    config: Annotated[Path, typer.Argument(help="A pipeline TOML (see edgeticket/presets/).")],
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: [run] out of the config).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Override [run] device.")] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
):
    """Run the whole chain from a config; finished stages are skipped on rerun, an interrupted one continues."""
    _run_pipeline(config, out, device, overwrite, quiet)


@app.command()
@handled
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/demo"),
    preset: Annotated[str, typer.Option("--preset", help="demo (CPU, minutes) or nyu-fcrn50 (GPU, the full recipe).")] = "demo",
    device: Annotated[str | None, typer.Option("--device", help="Override the preset's device.")] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
):
    """The whole story on synthetic rooms: data, dense model, IMP searches, baselines, best ticket, export, bench."""
    from edgeticket.pipeline import preset_path

    _run_pipeline(preset_path(preset), out, device, overwrite, quiet)


def _run_pipeline(config: Path, out: Path | None, device: str | None, overwrite: bool, quiet: bool) -> None:
    from edgeticket.fsio import read_json
    from edgeticket.pipeline import run_pipeline

    state = run_pipeline(config, out, device=device, overwrite=overwrite, progress=progress_enabled(quiet),
                         log=lambda m: typer.echo(m, err=True))
    bench_info = state["stages"]["bench"]
    report = read_json(Path(bench_info["report"]).with_suffix(".json"))
    print_bench_table(report)
    typer.echo(f"report: {bench_info['report']}")
    for p in bench_info["plots"]:
        typer.echo(f"plot: {p}")


def main() -> None:
    from edgeticket import faults

    faults.point("start")
    app()


if __name__ == "__main__":
    main()
