"""ORT latency of exported FCRN tickets (random weights): dense, unstructured, channel tickets, INT8.

    python benchmarks/export_latency.py --arch fcrn_resnet50 --out runs/bench-r50 --threads 2 --runs 30

Builds model directories with random weights for: dense; a 90% unstructured ticket (global
magnitude); channel tickets at about 50% and 75% channel sparsity (every prunable group of the
encoder's bottlenecks and the decoder, round_to 8); exports each with ``edgeticket.export``
(compacted, fp32 and INT8) and times them with the bench's latency code. The printed command
then reproduces the figures with ``edgeticket bench`` on the same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edgeticket import paths
from edgeticket.bench.latency import cpu_model, measure
from edgeticket.export.api import export
from edgeticket.export.config import ExportConfig
from edgeticket.export.onnx_export import ort_session
from edgeticket.fsio import save_torch, write_json
from edgeticket.hparams import InputSize
from edgeticket.models import build_model, get_record
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.criteria.channel import prune_channels
from edgeticket.tickets.criteria.magnitude import magnitude_global
from edgeticket.tickets.groups import channel_groups, prunable_groups
from edgeticket.tickets.mask import Mask


def randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def make_dir(folder: Path, arch: str, size, data: str | None, mask: Mask | None, criterion: str, model) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if mask is not None:
        mask.apply_(model)
        mask.save(folder / paths.MASK)
    save_torch(folder / paths.MODEL, model.state_dict())
    rec = get_record(arch)
    write_json(folder / paths.META, {"arch": arch, "input_size": list(size), "mean": list(rec.mean), "std": list(rec.std),
                                     "criterion": criterion, "level": None, "branch": "",
                                     "data": {"cache": data, "source": data}})
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="fcrn_resnet50")
    ap.add_argument("--size", default="228x304")
    ap.add_argument("--out", default="runs/bench-r50")
    ap.add_argument("--data", default=None, help="a dataset folder or cache for INT8 calibration (at --size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--calib-images", type=int, default=8)
    ap.add_argument("--variants", default="dense,unstructured90,channel50,channel75")
    ap.add_argument("--all-quantized", action="store_true", help="also INT8 each with the head quantized (<label>_allq)")
    a = ap.parse_args()
    size = InputSize.parse(a.size)
    out = Path(a.out)
    torch.manual_seed(0)
    base = randomize_bn(build_model(a.arch)).eval()
    sd = base.state_dict()
    scope = C.prunable_names(base)
    groups = prunable_groups(channel_groups(base), set(scope))
    variants = {"dense": (None, "dense")}
    variants["unstructured90"] = (magnitude_global(dict(base.named_parameters()), Mask.ones(base, scope), 0.1).mask,
                                  "magnitude-global")
    for keep, label in ((0.5, "channel50"), (0.25, "channel75")):
        m = C.with_bn_entries(Mask.ones(base, scope), groups)
        # prune_channels's density counts weights as compaction does: about the square of the channel fraction
        variants[label] = (prune_channels(dict(base.named_parameters()), m, groups, keep ** 2, round_to=8).mask, "channel")
    rows = {}
    variants = {k: v for k, v in variants.items() if k in a.variants.split(",")}
    for label, (mask, crit) in variants.items():
        model = build_model(a.arch)
        model.load_state_dict(sd)
        src = make_dir(out / "src" / label, a.arch, size, a.data, mask, crit, model)
        rep = export(src, out / "export" / label, ExportConfig(int8=a.data is not None, calib_images=a.calib_images,
                                                                  allow_constant=True),  # random weights: latency only
                     overwrite=True, progress=False)
        if a.all_quantized and a.data is not None:
            allq = export(src, out / "export" / f"{label}_allq", ExportConfig(int8=True, calib_images=a.calib_images,
                                                                             int8_fp32_head=False, allow_constant=True),
                          overwrite=True, progress=False)
            print(json.dumps({label: {"head_fp32": rep["int8"]["drift"], "all_quantized": allq["int8"]["drift"],
                                      "out_head_fp32": rep["int8"]["output_vs_fp32"],
                                      "out_all_quantized": allq["int8"]["output_vs_fp32"]}}, default=str))
        row = {"gmacs": rep["after"]["macs"] / 1e9, "params_m": rep["after"]["params"] / 1e6,
               "mask_sparsity": mask.sparsity() if mask is not None else 0.0,
               "channel_sparsity": mask.channel_sparsity() if mask is not None else 0.0}
        for prec, f in (("fp32", paths.ONNX), ("int8", paths.ONNX_INT8)):
            p = out / "export" / label / f
            if p.exists():
                lat = measure(ort_session(p, a.threads), size, 1, a.runs, 5)
                row[f"{prec}_p50_ms"] = lat["p50"]
                row[f"{prec}_min_ms"] = lat["min"]
        rows[label] = row
    dense = rows.get("dense")
    for r in rows.values() if dense else []:
        r["macs_reduction"] = dense["gmacs"] / r["gmacs"]
        r["speedup_fp32"] = dense["fp32_p50_ms"] / r["fp32_p50_ms"]
        r["expected_ms_at_190_gflops"] = 2 * r["gmacs"] / 190 * 1000
    files = " ".join(str(out / "export" / k / f) for k in rows for f in (paths.ONNX, paths.ONNX_INT8)
                     if (out / "export" / k / f).exists())
    print(json.dumps({"arch": a.arch, "size": a.size, "threads": a.threads, "cpu": cpu_model(), "rows": rows}, indent=2))
    print(f"# reproduce with: edgeticket bench {files} --baseline {out / 'export' / 'dense' / paths.ONNX} "
          f"--data DATA --out {out / 'bench'} --threads {a.threads} --runs {a.runs} --limit 4")


if __name__ == "__main__":
    main()
