"""Does the latency check time the same thing as the bench? (issue 24)

    python benchmarks/check_vs_export_latency.py SEARCH_LEVEL DENSE_ONNX TICKET_ONNX [--threads 1] [--rounds 20]

The check (``tickets.imp.check_level``) exports the ticket at its alive widths from a random-weight
model with BN folded; the bench times ``edgeticket export``'s trained, compacted file. This script
makes the check's two exports of SEARCH_LEVEL's mask (dense and ticket, fcrn_resnet18 at 96x128)
and times all four models in one interleaved run (``bench.latency.interleaved``), printing each
p50 and both speed-ups, and the op counts of each graph.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgeticket.bench.latency import alternating_pools, interleaved
from edgeticket.export.fold import fold_batchnorm
from edgeticket.export.onnx_export import export_onnx, ort_session
from edgeticket.models.adapt import adapt_widths
from edgeticket.models.registry import build_model
from edgeticket.tickets.criteria.common import prunable_names
from edgeticket.tickets.groups import build_graph, channel_groups, prunable_groups
from edgeticket.tickets.imp import alive_widths
from edgeticket.tickets.mask import Mask

SIZE = (96, 128)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("level", type=Path)
    ap.add_argument("dense_onnx")
    ap.add_argument("ticket_onnx")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    m = build_model("fcrn_resnet18")
    groups = prunable_groups(channel_groups(m, build_graph(m)), set(prunable_names(m)))
    widths = alive_widths(m, Mask.load(args.level / "mask.pt"), groups)
    files = {"dense_bench": args.dense_onnx, "ticket_bench": args.ticket_onnx}
    tmp = Path(tempfile.mkdtemp())
    for name, wd in (("dense_check", {}), ("ticket_check", widths)):
        model = copy.deepcopy(m).eval()
        if wd:
            model = adapt_widths(model, {k: list(v) for k, v in wd.items()})
        export_onnx(fold_batchnorm(model), tmp / f"{name}.onnx", SIZE, {})
        files[name] = str(tmp / f"{name}.onnx")
    names = list(files)
    pools = alternating_pools(len(names), 2, lambda i: ort_session(files[names[i]], args.threads,
                                                                   "CPUExecutionProvider", "all"))
    times = interleaved([(p, SIZE) for p in pools], 1, args.rounds, 5 * args.rounds, 3)
    med = {n: float(np.median(t)) for n, t in zip(names, times, strict=True)}
    print(", ".join(f"{n} {v:.3f} ms" for n, v in med.items()))
    print(f"bench files: {med['dense_bench'] / med['ticket_bench']:.3f}x, "
          f"check files: {med['dense_check'] / med['ticket_check']:.3f}x")
    for n in names:
        print(n, dict(Counter(node.op_type for node in onnx.load(files[n]).graph.node)))


if __name__ == "__main__":
    main()
