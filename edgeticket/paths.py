"""Every file name a run writes, in one place (open_lth's ``foundations/paths.py``)."""

from __future__ import annotations

from pathlib import Path

MODEL = "model.pt"  # best weights by validation rmse, a plain state dict
META = "meta.json"  # arch, input size, mean/std, widths, hyperparameters, provenance
METRICS = "metrics.json"  # {"val": {...}, "test": {...}}
MASK = "mask.pt"  # parameter name -> bool tensor
LOG = "log.jsonl"  # one line per epoch
LAST = "last.pt"  # the resumable training state
FINAL = "final.pt"  # the weights at the end of training (pruning is judged on these)
REWIND = "rewind.pt"  # weights at the late-rewinding point (epoch:K / step:K)
SPARSITY = "sparsity.json"
SEARCH = "search.json"  # the search's settings, written once
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
SUMMARY_PNG = "sparsity.png"
ONNX = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT_JSON = "export.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PIPELINE_STATE = "pipeline.json"


def level_dir(root: str | Path, level: int) -> Path:
    return Path(root) / f"level_{level:02d}"


def branch_dir(level: str | Path, name: str) -> Path:
    return Path(level) / f"branch_{name}"


def parse_level_name(name: str) -> int | None:
    if name.startswith("level_") and name[6:].isdigit():
        return int(name[6:])
    return None
