"""Every file name a run writes, in one place (open_lth's ``foundations/paths.py``)."""

from __future__ import annotations

from pathlib import Path

# A dataset folder (NYU Depth v2's official layout, which the synthetic rooms copy)
LABELED = "nyu_depth_v2_labeled.mat"
SPLITS_MAT = "splits.mat"  # trainNdxs / testNdxs, 1-based
FETCH_SIDECAR = "fetch.json"  # what `data fetch` downloaded, from where, with which sha256

# A model directory
MODEL = "model.pt"  # best weights by validation rmse, a plain state dict
META = "meta.json"  # arch, input size, mean/std, widths, hyperparameters, provenance
METRICS = "metrics.json"  # {"val": {...}, "test": {...}}
MASK = "mask.pt"  # parameter name -> bool tensor
LOG = "log.jsonl"  # one line per epoch
LAST = "last.pt"  # the resumable training state
FINAL = "final.pt"  # the weights at the end of training (pruning is judged on these)
REWIND = "rewind.pt"  # weights at the late-rewinding point (epoch:K / step:K)
SPARSITY = "sparsity.json"
LATENCY_CHECK = "latency_check.json"  # a budgeted level's measurement beside the dense model, written with its mask
SEARCH = "search.json"  # the search's settings, written once
START = "start.pt"  # the weights a search's level 0 starts from (pretrained, or a seeded random init)
INIT = "init.pt"  # a seeded random initialisation, the rewind point for --rewind init
CACHE_META = "cache.json"  # written last: marks a finished training cache
CACHE_DIRNAME = ".edgeticket-cache"  # a dataset folder's own caches, one per size and settings
HASHES = "hashes.json"  # remembered sha256 of a data folder's files, by (size, mtime)
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
SUMMARY_PNG = "sparsity.png"
PLOT_ACCURACY_LATENCY = "accuracy_vs_latency.png"
PLOT_SPARSITY_DELTA1 = "sparsity_vs_delta1.png"
PLOT_PREDICTIONS = "predictions.png"
PLOT_LATENCY_MODEL = "predicted_vs_measured_latency.png"
ONNX = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT_JSON = "export.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PIPELINE_STATE = "pipeline.json"
LOCK = ".lock"
RUN_MARKER = ".edgeticket.json"  # every folder a command writes: its kind, settings and their hash
LOCK_SUFFIX = ".edgeticket-lock"  # beside a folder: the advisory lock of the command writing it
COMMIT_MARK = ".committed"  # in a staging folder: the new set is complete, swap it in

# The pipeline's run folder: one sub-folder per stage.
PIPE_DATA = "data/synth"
PIPE_DENSE = "finetune/dense"
PIPE_TICKET = "finetune/ticket"
PIPE_EFFICIENT = "finetune/efficient"  # [efficient]: an efficient model from the start (FastDepth), benched beside
PIPE_SEARCH = "search"
PIPE_SEARCH_UNSTRUCTURED = "search_unstructured"
PIPE_EXPORT = "export"
PIPE_BENCH = "bench"


def cache_split(split: str) -> str:
    """A training cache's file of one split: train.h5, val.h5, test.h5."""
    return f"{split}.h5"


def level_dir(root: str | Path, level: int) -> Path:
    return Path(root) / f"level_{level:02d}"


def branch_name(prefix: str, seed: int | None = None) -> str:
    """'random' + seed 1 -> 'random_s1': seeds of one baseline form one family."""
    return prefix if seed is None else f"{prefix}_s{seed}"


def branch_dir(level: str | Path, name: str) -> Path:
    return Path(level) / f"branch_{name}"


def parse_level_name(name: str) -> int | None:
    if name.startswith("level_") and name[6:].isdigit():
        return int(name[6:])
    return None
