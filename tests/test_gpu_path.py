"""The GPU path on the CPU: torch.compile (inductor compiles for the CPU too), bf16 autocast,
channels_last, and DDP under torchrun with one process, the code a GPU run goes through.

One compiled model is shared by the whole module: the search's levels reuse it, and the
fine-tune's model has the same structure, so dynamo reuses its graph (compiling fcrn_tiny for the
CPU takes about a minute; everything else here takes seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SIZE, tiny_finetune_config, tiny_search_config, tiny_train_config

from edgeticket import paths
from edgeticket.tickets.imp import search
from edgeticket.tickets.mask import Mask
from edgeticket.train import trainer as trainer_mod
from edgeticket.train.finetune import finetune
from edgeticket.train.metrics import METRIC_KEYS

GPU_LIKE = dict(compile=True, amp="bf16", channels_last="on")


def _graphs() -> int:
    import torch._dynamo.utils as du

    return int(du.counters["stats"]["unique_graphs"])


@pytest.fixture(scope="module")
def compiled_runs(cache, tmp_path_factory):
    """A 2-level channel search and a masked fine-tune, compiled, in bf16, channels_last; the
    number of dynamo graphs when each training starts and when it ends."""
    root = tmp_path_factory.mktemp("gpu_path")
    seen: list[tuple[str, int]] = []
    real_fit = trainer_mod.Trainer.fit

    def counting_fit(self, *args, **kwargs):
        seen.append((f"start {self.out.name}", _graphs()))
        res = real_fit(self, *args, **kwargs)
        seen.append((f"end {self.out.name}", _graphs()))
        return res

    trainer_mod.Trainer.fit = counting_fit
    try:
        search(cache, root / "s", tiny_search_config(tiny_train_config(epochs=1, **GPU_LIKE), input_size=SIZE,
                                                     val_fraction=0.15, levels=2, criterion="channel", round_to=2),
               device="cpu", progress=False)
        ticket = Mask.load(paths.level_dir(root / "s", 1))
        finetune(cache, root / "ft", tiny_finetune_config(tiny_train_config(epochs=1, **GPU_LIKE)), mask=ticket,
                 device="cpu", progress=False)
    finally:
        trainer_mod.Trainer.fit = real_fit
    return root, seen


@pytest.mark.slow
def test_compile_bf16_channels_last_runs_and_a_new_mask_does_not_recompile(compiled_runs):
    root, seen = compiled_runs
    counts = dict(seen)
    assert counts["end level_00"] > counts["start level_00"]  # level 0 really compiled
    assert counts["end level_01"] == counts["start level_01"] == counts["end level_00"]  # level 1: no recompile
    assert counts["end ft"] == counts["start ft"]  # the fine-tune's model reuses the graph


@pytest.mark.slow
def test_pruned_weights_stay_exactly_zero_and_metrics_are_finite(compiled_runs):
    root, _ = compiled_runs
    for folder in (paths.level_dir(root / "s", 1), root / "ft"):
        mask = Mask.load(folder)
        for name in ("model.pt", "final.pt"):
            weights = torch.load(folder / name, weights_only=True)
            for k, keep in mask.items():
                assert (weights[k][~keep] == 0).all(), (folder, name, k)
        metrics = json.loads((folder / paths.METRICS).read_text())
        for split in ("val", "test"):
            assert all(torch.isfinite(torch.tensor(metrics[split][k])) for k in METRIC_KEYS), (folder, split)


@pytest.mark.slow
def test_evaluation_under_bf16_training_is_scored_in_fp32(compiled_runs):
    """metrics.json of a bf16 run equals a plain fp32 evaluation of its model.pt (to float rounding),
    and differs from a bf16 evaluation of it."""
    from edgeticket.data.dataset import PreparedData
    from edgeticket.models.store import load_model_dir
    from edgeticket.train.evaluate import evaluate

    root, _ = compiled_runs
    folder = root / "ft"
    model, meta = load_model_dir(folder)
    model = model.to(memory_format=torch.channels_last)  # as the trainer holds it
    data = PreparedData(meta["data"]["cache"])
    cfg = meta["train"]
    fp32 = evaluate(model, data, "val", "cpu", cfg["eval_batch_size"], meta["mean"], meta["std"], channels_last=True)
    saved = json.loads((folder / paths.METRICS).read_text())["val"]
    assert saved == pytest.approx(fp32, rel=1e-7, abs=1e-9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = evaluate(model, data, "val", "cpu", cfg["eval_batch_size"], meta["mean"], meta["std"], channels_last=True)
    assert bf16 != pytest.approx(fp32, rel=1e-5, abs=1e-7)  # the check above can tell the two apart


def test_trainer_times_its_own_step(prepared, tmp_path):
    from edgeticket.models import build_model
    from edgeticket.train.run import run_meta

    t = trainer_mod.Trainer(build_model("fcrn_tiny"), prepared, tiny_train_config(), tmp_path, progress=False,
                            meta=run_meta("fcrn_tiny", prepared))
    r = t.time_steps(steps=2, warmup=1)
    assert r["batch"] == 4 and r["steps"] == 2 and r["images_per_s"] > 0 and r["warmup_s"] > 0


SEARCH = ["search", "--arch", "fcrn_tiny", "--pretrained", "none", "--levels", "2", "--epochs", "1",
          "--criterion", "channel", "--round-to", "2", "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.001",
          "--decoder-lr-mult", "1", "--device", "cpu", "--quiet"]


@pytest.mark.slow
def test_torchrun_with_one_process_runs_the_ddp_path_and_matches_a_plain_run(cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).parent
    plain = subprocess.run([str(exe / "edgeticket"), *SEARCH, "--data", str(cache), "--out", str(tmp_path / "plain")],
                           capture_output=True, text=True, env=env)
    assert plain.returncode == 0, plain.stderr[-2000:]
    ddp = subprocess.run([str(exe / "torchrun"), "--nproc_per_node", "1", "-m", "edgeticket.cli.app", *SEARCH,
                          "--data", str(cache), "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for k in (0, 1):
        a, b = Mask.load(paths.level_dir(tmp_path / "plain", k)), Mask.load(paths.level_dir(tmp_path / "ddp", k))
        assert all(torch.equal(a[n], b[n]) for n in a), k
        ma = json.loads((paths.level_dir(tmp_path / "plain", k) / paths.METRICS).read_text())
        mb = json.loads((paths.level_dir(tmp_path / "ddp", k) / paths.METRICS).read_text())
        assert ma["val"] == pytest.approx(mb["val"], rel=1e-5), k
