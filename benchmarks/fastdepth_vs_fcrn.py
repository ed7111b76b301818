"""Which family wins at which speed: dense FastDepth, its channel ticket, and FCRN tickets of as many MACs.

    python benchmarks/fastdepth_vs_fcrn.py --out /tmp/bm/fd --threads 2 --rounds 30
    python benchmarks/fastdepth_vs_fcrn.py --out /tmp/bm/fd --threads 2 --rounds 60 --reuse  # time again

Random weights (latency and MACs do not depend on them). For each input size: dense
``fastdepth_mobilenet_v2``, its 50% channel ticket (every prunable group keeps half its channels,
round_to 8), and channel tickets of ``fcrn_resnet18`` and ``fcrn_resnet50`` whose kept fraction is
chosen so their MACs match dense FastDepth's (the MAC count of a mask, from its alive widths,
before any export). Each is exported by ``edgeticket.export`` (compacted, BN folded, fp32) and timed
with ONNX Runtime in interleaved rounds: every round runs every model once, in a shuffled order,
so machine noise falls on all of them alike. Reported: p50 and the 10th-90th percentile of the
rounds, in ms, batch 1.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from edgeticket import paths
from edgeticket.bench.latency import cpu_model
from edgeticket.export.api import export
from edgeticket.export.config import ExportConfig
from edgeticket.export.onnx_export import ort_session
from edgeticket.fsio import save_torch, write_json
from edgeticket.hparams import InputSize
from edgeticket.models import build_model, get_record
from edgeticket.models.macs import count_macs
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.criteria.channel import prune_channels
from edgeticket.tickets.groups import channel_groups, prunable_groups
from edgeticket.tickets.imp import alive_widths
from edgeticket.tickets.mask import Mask


def _random_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def channel_ticket(model, keep: float, groups=None) -> tuple[Mask, list]:
    scope = C.prunable_names(model)
    groups = groups or prunable_groups(channel_groups(model), set(scope))
    m = C.with_bn_entries(Mask.ones(model, scope), groups)
    return prune_channels(dict(model.named_parameters()), m, groups, keep, round_to=8).mask, groups


def keep_for_macs(arch: str, size, target: int) -> float:
    """The kept channel fraction whose ticket's MACs are nearest ``target`` (by bisection on the mask's count)."""
    model = _random_bn(build_model(arch))
    lo, hi, groups = 0.02, 1.0, None
    for _ in range(12):
        mid = (lo + hi) / 2
        mask, groups = channel_ticket(model, mid, groups)
        macs = count_macs(model, size, alive_widths(model, mask, groups))
        lo, hi = (mid, hi) if macs < target else (lo, mid)
    return round((lo + hi) / 2, 3)


def model_dir(folder: Path, arch: str, size, keep: float | None) -> Path:
    torch.manual_seed(0)
    model = _random_bn(build_model(arch))
    folder.mkdir(parents=True, exist_ok=True)
    crit = "dense"
    if keep is not None:
        mask, _ = channel_ticket(model, keep)
        mask.apply_(model)
        mask.save(folder / paths.MASK)
        crit = "channel"
    save_torch(folder / paths.MODEL, model.state_dict())
    rec = get_record(arch)
    write_json(folder / paths.META, {"arch": arch, "input_size": list(size), "mean": list(rec.mean),
                                     "std": list(rec.std), "criterion": crit, "level": None, "branch": "",
                                     "data": {"cache": None, "source": None}})
    return folder


def interleaved(sessions: dict, size, rounds: int, warmup: int = 5, seed: int = 0) -> dict:
    x = np.random.default_rng(seed).standard_normal((1, 3, *size)).astype(np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[k])
    times = {k: [] for k in sessions}
    order = list(sessions)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: {"p50": float(np.median(v)), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}
            for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-fastdepth")
    ap.add_argument("--sizes", default="224x224,228x304")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--fcrn", default="fcrn_resnet18,fcrn_resnet50")
    ap.add_argument("--reuse", action="store_true", help="reuse the exports already under --out")
    a = ap.parse_args()
    out = Path(a.out)
    result = {"cpu": cpu_model(), "threads": a.threads, "rounds": a.rounds, "sizes": {}}
    for text in a.sizes.split(","):
        size = InputSize.parse(text)
        fd_macs = count_macs(build_model("fastdepth_mobilenet_v2"), size)
        variants = {"fastdepth dense": ("fastdepth_mobilenet_v2", None), "fastdepth channel 50%": ("fastdepth_mobilenet_v2", 0.5)}
        for arch in a.fcrn.split(","):
            keep = keep_for_macs(arch, size, fd_macs)
            variants[f"{arch} channel, keep {keep:.0%}"] = (arch, keep)
        rows, sessions = {}, {}
        for label, (arch, keep) in variants.items():
            slug = label.replace(" ", "_").replace(",", "").replace("%", "")
            dst = out / text / "export" / slug
            if a.reuse and (dst / paths.EXPORT_JSON).exists():  # time again without exporting again
                rep = json.loads((dst / paths.EXPORT_JSON).read_text())
            else:
                src = model_dir(out / text / "src" / slug, arch, size, keep)
                rep = export(src, dst, ExportConfig(int8=False), overwrite=True, progress=False)
            rows[label] = {"arch": arch, "keep": keep, "gmacs": rep["after"]["macs"] / 1e9,
                           "params_m": rep["after"]["params"] / 1e6}
            sessions[label] = ort_session(out / text / "export" / slug / paths.ONNX, a.threads)
        lat = interleaved(sessions, size, a.rounds)
        for label in rows:
            rows[label]["latency_ms"] = lat[label]
        result["sizes"][text] = rows
        print(json.dumps({text: rows}, indent=2), flush=True)
    write_json(out / "fastdepth_vs_fcrn.json", result)
    print("| size | model | GMACs | params | p50 (p10-p90) |\n|---|---|---|---|---|")
    for text, rows in result["sizes"].items():
        for label, r in rows.items():
            lt = r["latency_ms"]
            print(f"| {text} | {label} | {r['gmacs']:.3f} | {r['params_m']:.2f} M | "
                  f"{lt['p50']:.1f} ms ({lt['p10']:.1f}-{lt['p90']:.1f}) |")


if __name__ == "__main__":
    main()
