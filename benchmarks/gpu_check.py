"""The GPU path, checked and measured in one command: correctness on the device, the trainer's own
step throughput, and one IMP level end to end at NYU size.

    python benchmarks/gpu_check.py                      # on a CUDA machine, about 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick # here, to try it (a few minutes)

On the lent GPU machine (Python 3.12, torch 2.11, no torch-pruning, no package registry), carry
the torch-pruning wheel in the git-ignored ``.gpu/wheels/`` (``make gpu-wheels`` downloads it):
this script installs it with ``pip install --no-index --no-deps`` when torch_pruning is missing.
The data are synthetic rooms rendered on the machine, not carried.

(a) correctness: a masked fine-tune and a 2-level channel search with compile + bf16 +
    channels_last: pruned weights exactly zero, metrics finite, no recompile for a new level's
    mask; then the same search under ``torchrun --nproc_per_node 1`` (NCCL and DDP on a GPU),
    which must give the same masks.
(b) ``Trainer.time_steps``: FCRN-ResNet50 at 228x304, batch 64 and 128, dense and 80%-masked,
    eager / compile / compile reduce-overhead: img/s and MFU (6 x forward MACs per image over
    the step time, against the device's nominal bf16 peak and a measured bf16 matmul rate).
(c) one IMP level end to end (train + evaluate + prune) at NYU size, 795 training frames;
and a torch.profiler summary of the fastest configuration: where a step's time goes.

Each row that fails records its error instead of stopping the script (timm's benchmark habit);
rows that would run past ``--budget-s`` are skipped and say so. Writes ``gpu_check.json`` and
``gpu_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOMINAL_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}  # dense, no sparsity


def ensure_torch_pruning() -> str:
    """torch_pruning, installed from a carried wheel when the machine has none."""
    if importlib.util.find_spec("torch_pruning") is not None:
        return "present"
    wheels = sorted((ROOT / ".gpu" / "wheels").glob("torch_pruning-*.whl"))
    if not wheels:
        sys.exit("gpu_check: torch_pruning is not installed and no wheel is in .gpu/wheels/; run `make gpu-wheels` "
                 "on a machine with a package registry and carry .gpu/ along.")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheels[-1])], check=True)
    return f"installed {wheels[-1].name}"


class Report:
    """Rows of results, written after every row so that a killed run keeps what it measured."""

    def __init__(self, out: Path, budget_s: float, env: dict):
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.data = {"env": env, "correctness": [], "throughput": [], "profile": [], "imp_level": [], "skipped": []}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def row(self, section: str, name: str, fn, need_s: float = 0.0) -> dict | None:
        if self.left() < need_s:
            self.data["skipped"].append(f"{section}: {name} (needs ~{need_s:.0f} s, {self.left():.0f} s left)")
            self.write()
            return None
        t0 = time.perf_counter()
        try:
            r = {"name": name, **fn()}
        except Exception as e:  # noqa: BLE001 - a failed row is recorded, the others still run
            r = {"name": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                 "trace": traceback.format_exc(limit=6)}
        r["seconds"] = round(time.perf_counter() - t0, 1)
        self.data[section].append(r)
        print(f"[{section}] {name}: " + json.dumps({k: v for k, v in r.items() if k != "trace"}), flush=True)
        self.write()
        return r

    def write(self) -> None:
        self.data["total_s"] = round(time.perf_counter() - self.t0, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    return env


def peak_tflops(device: str) -> dict:
    """The nominal dense bf16 peak for known GPUs, and a measured bf16 (CPU: fp32) matmul rate."""
    import torch

    dev = torch.device(device)
    n, reps, dtype = (8192, 30, torch.bfloat16) if dev.type == "cuda" else (1024, 5, torch.float32)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    measured = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else ""
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None)
    return {"measured_matmul_tflops": round(measured, 1), "nominal_bf16_tflops": nominal}


def sync(dev) -> None:
    import torch

    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


# -- data ----------------------------------------------------------------------------------------

def make_data(root: Path, frames: int, sizes: list, quick: bool) -> dict:
    """Synthetic rooms in NYU's layout and their caches, one per input size."""
    from edgeticket.data.config import DataConfig
    from edgeticket.data.prepare import resolve_data
    from edgeticket.data.synth import write_synthetic
    from edgeticket.hparams import InputSize

    rooms = root / "rooms"
    if not (rooms / "splits.mat").exists():
        write_synthetic(rooms, frames, seed=0, progress=False)
    return {s: resolve_data(rooms, DataConfig(input_size=InputSize.parse(s), val_fraction=0.1), progress=False)
            for s in sizes}


# -- (a) correctness -----------------------------------------------------------------------------

def graphs() -> int:
    import torch._dynamo.utils as du

    return int(du.counters["stats"]["unique_graphs"])


def correctness(cache: Path, work: Path, device: str, arch: str) -> dict:
    import torch

    from edgeticket import paths
    from edgeticket.models.config import ModelConfig
    from edgeticket.tickets.config import SearchConfig
    from edgeticket.tickets.imp import search
    from edgeticket.tickets.mask import Mask
    from edgeticket.train import trainer as T
    from edgeticket.train.config import FinetuneConfig, TrainConfig
    from edgeticket.train.finetune import finetune

    train = TrainConfig(epochs=2, batch_size=16, optimizer="adamw", lr=1e-3, decoder_lr_mult=1.0, warmup_epochs=0,
                        compile=True, amp="bf16", channels_last="on")
    model = ModelConfig(arch=arch, pretrained="none")
    counts: list[tuple[str, int]] = []
    real_fit = T.Trainer.fit

    def counting_fit(self, *a, **k):
        counts.append((f"start {self.out.name}", graphs()))
        res = real_fit(self, *a, **k)
        counts.append((f"end {self.out.name}", graphs()))
        return res

    T.Trainer.fit = counting_fit
    try:
        search(cache, work / "search", SearchConfig(levels=2, criterion="channel", round_to=8, model=model, train=train),
               device=device, overwrite=True, progress=False)
        ticket = Mask.load(paths.level_dir(work / "search", 1))
        res = finetune(cache, work / "ft", FinetuneConfig(model=model, train=train), mask=ticket, device=device,
                       overwrite=True, progress=False)
    finally:
        T.Trainer.fit = real_fit
    c = dict(counts)
    zero = True
    for folder in (paths.level_dir(work / "search", 1), work / "ft"):
        mask, w = Mask.load(folder), torch.load(folder / paths.FINAL, weights_only=True)
        zero &= all(bool((w[k][~m] == 0).all()) for k, m in mask.items())
    finite = all(torch.isfinite(torch.tensor(list(v for k, v in res.val.items() if k != "n_images"))).tolist())
    return {"pruned_weights_zero": zero, "metrics_finite": finite, "val_delta1": res.val.get("delta1"),
            "graphs_level0": c["end level_00"] - c["start level_00"],
            "recompiles_level1": c["end level_01"] - c["start level_01"],
            "recompiles_finetune": c["end ft"] - c["start ft"],
            "ok": zero and finite and c["end level_01"] == c["start level_01"]}


def torchrun_search(cache: Path, work: Path, device: str, arch: str) -> dict:
    """The same 2-level search, plain and under torchrun --nproc_per_node 1 (DDP; NCCL on a GPU)."""
    import torch

    from edgeticket import paths
    from edgeticket.tickets.mask import Mask

    args = ["search", "--data", str(cache), "--arch", arch, "--pretrained", "none", "--levels", "2", "--epochs", "1",
            "--criterion", "channel", "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.001",
            "--decoder-lr-mult", "1", "--device", device, "--quiet", "--overwrite"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    runs = {"plain": [sys.executable, "-m", "edgeticket.cli.app"],
            "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "edgeticket.cli.app"]}
    out = {}
    for name, cmd in runs.items():
        t0 = time.perf_counter()
        p = subprocess.run([*cmd, *args, "--out", str(work / name)], capture_output=True, text=True, env=env)
        out[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        if p.returncode != 0:
            raise RuntimeError(f"{name} exited {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    same = all(torch.equal(a[k], b[k]) for lv in (0, 1)
               for a, b in [(Mask.load(paths.level_dir(work / "plain", lv)), Mask.load(paths.level_dir(work / "torchrun", lv)))]
               for k in a)
    return {**out, "same_masks": same, "ok": same}


# -- (b) throughput --------------------------------------------------------------------------------

def throughput(cache: Path, device: str, arch: str, batch: int, masked: bool, mode: str, steps: int,
               warmup: int, peak: dict) -> dict:
    import torch

    from edgeticket.data.dataset import PreparedData
    from edgeticket.models import build_model
    from edgeticket.models.macs import count_macs
    from edgeticket.tickets.criteria.common import prunable_names
    from edgeticket.tickets.mask import Mask
    from edgeticket.train.config import TrainConfig
    from edgeticket.train.run import run_meta
    from edgeticket.train.trainer import Trainer

    data = PreparedData(cache)
    torch.manual_seed(0)
    model = build_model(arch)
    mask = None
    if masked:
        g = torch.Generator().manual_seed(0)
        mask = Mask.ones(model, prunable_names(model))
        for k in list(mask):
            mask[k] = torch.rand(mask[k].shape, generator=g) >= 0.8
    cfg = TrainConfig(batch_size=batch, compile=mode != "eager", compile_mode="default" if mode == "eager" else mode,
                      amp="auto", channels_last="auto")
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(model, data, cfg, d, meta=run_meta(arch, data), mask=mask, device=device, progress=False)
        r = t.time_steps(steps=steps, warmup=warmup)
    macs = count_macs(build_model(arch), tuple(data.input_size))
    flops = 6 * macs * r["images_per_s"] / 1e12
    mfu = {f"mfu_vs_{k.split('_')[0]}": round(flops / v, 3) for k, v in peak.items() if v}
    if device.startswith("cuda"):
        r["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        torch.cuda.reset_peak_memory_stats()
    return {"arch": arch, "input": str(data.input_size), "batch": batch, "masked": masked, "mode": mode,
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}, "model_tflops": round(flops, 1), **mfu}


def profile_steps(cache: Path, device: str, arch: str, batch: int, mode: str, steps: int = 5) -> dict:
    """Where a step's time goes: the top operators by device time (torch.profiler), for BENCHMARKS.md."""
    from torch.profiler import ProfilerActivity, profile

    from edgeticket.data.dataset import PreparedData
    from edgeticket.models import build_model
    from edgeticket.train.config import TrainConfig
    from edgeticket.train.run import run_meta
    from edgeticket.train.trainer import Trainer

    data = PreparedData(cache)
    cfg = TrainConfig(batch_size=batch, compile=mode != "eager", compile_mode=mode if mode != "eager" else "default")
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(build_model(arch), data, cfg, d, meta=run_meta(arch, data), device=device, progress=False)
        t.time_steps(steps=1, warmup=3)  # compile and warm up outside the profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with profile(activities=acts) as prof:
            r = t.time_steps(steps=steps, warmup=0)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:15]
    total = sum(getattr(e, key, 0) for e in prof.key_averages()) or 1
    return {"arch": arch, "batch": batch, "mode": mode, "images_per_s": round(r["images_per_s"], 1),
            "top_ops": [{"op": e.key, "share": round(getattr(e, key, 0) / total, 3), "calls": e.count} for e in rows]}


# -- (c) one IMP level end to end ----------------------------------------------------------------

def imp_level(cache: Path, work: Path, device: str, arch: str, epochs: int, mode: str) -> dict:
    from edgeticket import paths
    from edgeticket.fsio import read_jsonl
    from edgeticket.models.config import ModelConfig
    from edgeticket.tickets import imp
    from edgeticket.tickets.config import SearchConfig
    from edgeticket.train.config import TrainConfig

    marks: dict[str, float] = {}
    real_next, real_train = imp.next_mask, imp.train_masked

    def timed_next(ctx, level):
        t0 = time.perf_counter()
        res = real_next(ctx, level)
        marks[f"prune_{level}"] = time.perf_counter() - t0
        return res

    def timed_train(ctx, folder, *a, **k):
        t0 = time.perf_counter()
        res = real_train(ctx, folder, *a, **k)
        marks[f"train_eval_{folder.name}"] = time.perf_counter() - t0
        return res

    imp.next_mask, imp.train_masked = timed_next, timed_train
    try:
        train = TrainConfig(epochs=epochs, batch_size=64, compile=mode != "eager", compile_mode=mode if mode != "eager" else "default")
        imp.search(cache, work / "imp", SearchConfig(levels=2, criterion="channel", model=ModelConfig(arch=arch, pretrained="none"),
                                                     train=train), device=device, overwrite=True, progress=False)
    finally:
        imp.next_mask, imp.train_masked = real_next, real_train
    log = read_jsonl(paths.level_dir(work / "imp", 1) / paths.LOG)
    level1 = marks["prune_1"] + marks["train_eval_level_01"]
    epoch_s = [r["seconds"] for r in log]
    from edgeticket.data.dataset import PreparedData

    n_train = PreparedData(cache).count("train")
    return {"arch": arch, "train_frames": n_train, "epochs": epochs, "mode": mode,
            "level0_s (with compile)": round(marks["train_eval_level_00"], 1), "level1_s": round(level1, 1),
            "prune_s": round(marks["prune_1"], 2), "epoch_s": [round(s, 2) for s in epoch_s],
            "level_of_20_epochs_s (extrapolated)": round(level1 + (20 - epochs) * min(epoch_s), 1)}


# -- the table -------------------------------------------------------------------------------------

def markdown(d: dict) -> str:
    env = d["env"]
    lines = [f"# gpu_check: {env.get('gpu', env['device'])}, torch {env['torch']}, python {env['python']}", ""]
    lines += ["## Correctness", "", "| check | result |", "|---|---|"]
    for r in d["correctness"]:
        lines.append(f"| {r['name']} | {r.get('error') or {k: v for k, v in r.items() if k not in ('name', 'trace')}} |")
    lines += ["", "## Training step (Trainer.time_steps)", "",
              "| arch | input | batch | masked | mode | img/s | step ms | warm-up s | MFU (nominal) | MFU (matmul) | GiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["throughput"]:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} |")
            continue
        lines.append(f"| {r['arch']} | {r['input']} | {r['batch']} | {r['masked']} | {r['mode']} | {r['images_per_s']:.0f} | "
                     f"{r['step_ms']:.1f} | {r['warmup_s']:.1f} | {r.get('mfu_vs_nominal', '–')} | {r.get('mfu_vs_measured', '–')} | "
                     f"{r.get('max_memory_gib', '–')} |")
    for r in d.get("profile", []):
        lines += ["", f"## Where the time goes: {r['name']}", ""]
        lines += [r["error"]] if "error" in r else [f"- {o['op']}: {100 * o['share']:.1f}% ({o['calls']} calls)"
                                                     for o in r["top_ops"]]
    lines += ["", "## One IMP level end to end", ""]
    for r in d["imp_level"]:
        lines.append(f"- {r['name']}: " + (r.get("error") or ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("name", "trace"))))
    if d["skipped"]:
        lines += ["", "Skipped (time budget): " + "; ".join(d["skipped"])]
    lines += ["", f"Total {d.get('total_s', 0)} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny models and data: try the script on a CPU")
    ap.add_argument("--out", default="runs/gpu_check")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip rows that would end past this (default: 450 s on a GPU, none with --quick)")
    a = ap.parse_args()
    pruning = ensure_torch_pruning()
    sys.path.insert(0, str(ROOT))
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda, but CUDA is not available; use --device cpu --quick to try it here.")
    out = Path(a.out)
    budget = a.budget_s if a.budget_s is not None else (float("inf") if a.quick else 450.0)
    report = Report(out, budget, {**environment(a.device), "torch_pruning": pruning, "quick": a.quick})
    if a.quick:
        big, small, frames, arch, tiny_arch, steps, warm, batches, modes, epochs = (
            "48x64", "48x64", 40, "fcrn_tiny", "fcrn_tiny", 3, 2, [4], ["eager"], 1)
    else:  # 1,610 frames: 883 train (the official split's share), 795 after a 10% validation carve
        big, small, frames, arch, tiny_arch, steps, warm, batches, modes, epochs = (
            "228x304", "96x128", 1610, "fcrn_resnet50", "fcrn_tiny", 30, 5, [64, 128],
            ["eager", "default", "reduce-overhead"], 3)
    t0 = time.perf_counter()
    caches = make_data(out / "data", frames, sorted({big, small}), a.quick)
    report.data["env"]["data_s"] = round(time.perf_counter() - t0, 1)
    peak = peak_tflops(a.device)
    report.data["env"]["peak"] = {"measured_matmul_tflops": peak.get("measured_matmul_tflops"),
                                  "nominal_bf16_tflops": peak.get("nominal_bf16_tflops")}
    peak = {"nominal_tflops": peak.get("nominal_bf16_tflops"), "measured_tflops": peak.get("measured_matmul_tflops")}
    report.row("correctness", "compile+bf16+channels_last search and masked fine-tune",
               lambda: correctness(caches[small], out / "work", a.device, tiny_arch))
    report.row("correctness", "torchrun --nproc_per_node 1 (DDP) vs plain",
               lambda: torchrun_search(caches[small], out / "work", a.device, tiny_arch))
    for mode in modes:
        for bs in batches:
            for masked in (False, True):
                need = 5 if masked or mode == "eager" else 120  # a new compile takes 90-130 s on an H200
                report.row("throughput", f"{arch} b{bs} {'masked80' if masked else 'dense'} {mode}",
                           lambda bs=bs, masked=masked, mode=mode: throughput(caches[big], a.device, arch, bs, masked, mode,
                                                                              steps, warm, peak), need_s=need)
    report.row("profile", f"{arch} b{batches[0]} {modes[-1]}",
               lambda: profile_steps(caches[big], a.device, arch, batches[0], modes[-1]), need_s=0 if a.quick else 60)
    report.row("imp_level", f"{arch} {epochs} epochs, reduce-overhead" if not a.quick else f"{arch} {epochs} epoch",
               lambda: imp_level(caches[big], out / "work", a.device, arch, epochs,
                                 "eager" if a.quick else "reduce-overhead"), need_s=0 if a.quick else 150)
    report.write()
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {report.data['total_s']} s")


if __name__ == "__main__":
    main()
