"""The pipeline: the whole chain from one config, resumable stage by stage."""

from __future__ import annotations

import json

import pytest

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.pipeline import STAGES, load_config, preset_path, run_pipeline

TINY = """
[run]
out = "unused"
device = "cpu"
seed = 0

[data]
source = "synth"
synth_frames = 16
input_size = "48x64"
val_fraction = 0.15

[model]
arch = "fcrn_tiny"
pretrained = "none"

[train]
batch_size = 4
optimizer = "adamw"
lr = 0.001
decoder_lr_mult = 1.0
warmup_epochs = 0.0

[dense]
epochs = 1

[search]
criterion = "channel"
levels = 3
epochs = 1
round_to = 2

[search_unstructured]
criterion = "magnitude-global"
levels = 2
epochs = 1

[branches]
random_seeds = 1
levels = [1]

[ticket]
epochs = 1

[export]
int8 = true
calib_images = 8

[bench]
runs = 3
warmup = 1
batch_size = 4
"""


@pytest.mark.slow
def test_tiny_pipeline_runs_and_reruns_skip_every_stage(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    logs = []
    state = run_pipeline(cfg, tmp_path / "run", progress=False, log=logs.append)
    assert list(state["stages"]) == list(STAGES)
    report = json.loads((tmp_path / "run" / "bench" / paths.REPORT_JSON).read_text())
    names = [m["name"] for m in report["models"]]
    assert names[0] == "dense" and "ticket" in names and "ticket int8" in names and "unstructured" in names
    ticket = next(m for m in report["models"] if m["name"] == "ticket")
    assert ticket["vs_baseline"]["macs_ratio"] < 1
    sel = state["stages"]["select"]
    assert sel["level"] >= 1  # chosen by validation delta1 among the pruned levels
    meta = json.loads((tmp_path / "run" / "finetune" / "ticket" / paths.META).read_text())
    assert meta["ticket"]["level"] == sel["level"]
    logs.clear()
    run_pipeline(cfg, tmp_path / "run", progress=False, log=logs.append)
    assert logs == [f"[{s}] done earlier, skipped" for s in STAGES]


def test_presets_load_and_name_their_stages():
    for name in ("demo", "nyu-fcrn50"):
        cfg = load_config(preset_path(name))
        assert cfg["model"]["arch"] in ("fcrn_resnet18", "fcrn_resnet50")
    demo = load_config(preset_path("demo"))
    assert demo["search"]["levels"] == 4 and demo["search"]["criterion"] == "channel"
    full = load_config(preset_path("nyu-fcrn50"))
    assert full["search"]["levels"] == 10 and full["model"]["pretrained"] == "imagenet" and full["run"]["device"] == "cuda"


def test_bad_config(tmp_path):
    (tmp_path / "a.toml").write_text("[run]\nout = 'x'\n")
    with pytest.raises(UserError, match=r"no \[data\] section"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[run\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(tmp_path / "b.toml")
    with pytest.raises(UserError, match="no such config"):
        load_config(tmp_path / "c.toml")


def test_changed_config_on_rerun_is_refused(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / paths.PIPELINE_STATE).write_text(json.dumps({"stages": {}, "config": {"run": {"out": "other"}}}))
    with pytest.raises(UserError, match="another config"):
        run_pipeline(cfg, run_dir, progress=False, log=lambda m: None)
