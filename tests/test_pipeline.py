"""The pipeline: the whole chain from one config, resumable stage by stage."""

from __future__ import annotations

import json

import pytest

from edgeticket import paths
from edgeticket.bench.config import BenchConfig
from edgeticket.data.config import DataConfig
from edgeticket.errors import UserError
from edgeticket.export.config import ExportConfig
from edgeticket.fsio import sha256_file
from edgeticket.models.config import ModelConfig
from edgeticket.models.registry import get_record
from edgeticket.pipeline import PRESETS, STAGES, load_config, preset_path, run_pipeline
from edgeticket.tickets.config import SearchConfig
from edgeticket.train.config import TrainConfig

TINY = """
[run]
out = "unused"
device = "cpu"

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
distill = true

[efficient]
arch = "fastdepth_mobilenet_v2"
pretrained = "none"

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
    base = next(m for m in report["models"] if m["name"] == "efficient")  # the efficient model from the start
    assert base["size"]["macs"] == json.loads((tmp_path / "run" / "export" / "efficient" / paths.EXPORT_JSON)
                                              .read_text())["after"]["macs"]
    assert json.loads((tmp_path / "run" / "finetune" / "efficient" / paths.META).read_text())["arch"] == \
        "fastdepth_mobilenet_v2"
    ticket = next(m for m in report["models"] if m["name"] == "ticket")
    assert ticket["vs_baseline"]["macs_ratio"] < 1
    sel = state["stages"]["select"]
    assert sel["level"] >= 1  # chosen by validation delta1 among the pruned levels
    meta = json.loads((tmp_path / "run" / "finetune" / "ticket" / paths.META).read_text())
    assert meta["ticket"]["level"] == sel["level"]
    # the fair comparison: the ticket starts where its search's levels start, and trains as the dense model did
    start = tmp_path / "run" / "search" / paths.START
    assert meta["start"] == {"weights": str(start.resolve()), "sha256": sha256_file(start), "step": 0}
    dense = json.loads((tmp_path / "run" / "finetune" / "dense" / paths.META).read_text())
    # ... distilled from the dense model ([ticket] distill = true), its only difference
    assert {k: v for k, v in meta["train"].items() if k != "distill"} == \
        {k: v for k, v in dense["train"].items() if k != "distill"}
    assert state["stages"]["ticket"]["differs_from_dense"] == ["distill"]
    dense_dir = tmp_path / "run" / "finetune" / "dense"
    assert meta["distill"]["teacher"] == str(dense_dir.resolve())
    assert meta["distill"]["sha256"] == sha256_file(dense_dir / paths.MODEL)
    logs.clear()
    run_pipeline(cfg, tmp_path / "run", progress=False, log=logs.append)
    assert logs == [f"[{s}] done earlier, skipped" for s in STAGES]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_validate(name):
    cfg = load_config(preset_path(name))
    assert isinstance(cfg.search, SearchConfig) and isinstance(cfg.dense, TrainConfig)
    assert cfg.search.model == cfg.model and cfg.search.data == cfg.data.prepare
    assert cfg.ticket == cfg.dense  # the ticket gets the dense model's epochs and schedule, nothing else
    assert cfg.branches.random_seeds >= (3 if name.startswith("nyu-") else 2)
    if name in ("demo", "nyu-fcrn50"):  # every report sets the tickets against an efficient model
        assert cfg.efficient.arch == "fastdepth_mobilenet_v2" and cfg.model.arch.startswith("fcrn_")
    if name == "nyu-fastdepth":  # FastDepth's recipe, its ticket distilled from the dense model
        assert cfg.model.arch == "fastdepth_mobilenet_v2" and tuple(cfg.data.prepare.input_size) == (224, 224)
        assert (cfg.dense.optimizer, cfg.dense.lr, cfg.dense.batch_size, cfg.dense.loss) == ("sgd", 0.01, 8, "l1")
        assert cfg.ticket_distill and cfg.ticket.distill == ""  # the dense model's folder, known when it runs
    cfg.search.check()  # construction validated already; a second check must agree
    assert get_record(cfg.model.arch)


def test_sections_map_onto_the_stage_dataclasses_without_defaults_of_their_own(tmp_path):
    (tmp_path / "m.toml").write_text("[run]\n[data]\n[model]\n[dense]\n[search]\n[export]\n[bench]\n")
    cfg = load_config(tmp_path / "m.toml")
    assert cfg.search == SearchConfig() and cfg.dense == TrainConfig() and cfg.export == ExportConfig()
    assert cfg.bench == BenchConfig() and cfg.model == ModelConfig() and cfg.data.prepare == DataConfig()
    (tmp_path / "t.toml").write_text("[run]\n[data]\n[model]\n[train]\nlr = 0.5\n[dense]\nepochs = 3\n"
                                     "[search]\nlevels = 2\nlr = 0.25\n[export]\n[bench]\n")
    cfg = load_config(tmp_path / "t.toml")
    assert (cfg.dense.lr, cfg.dense.epochs, cfg.search.train.lr, cfg.search.levels) == (0.5, 3, 0.25, 2)
    assert cfg.ticket.lr == 0.5 and cfg.search.train.epochs == TrainConfig().epochs
    assert cfg.ticket == cfg.dense  # [ticket] is over [dense], so the ticket trains as the dense model


@pytest.mark.parametrize("section, line, match", [
    ("search", "levls = 2", r"\[search\]: unknown key 'levls'"),
    ("search", 'levels = "two"', r"\[search\]: levels = 'two': give a whole number"),
    ("dense", "lr = nan", r"\[dense\]: lr = nan: give a finite number"),
    ("train", 'optimizer = "adam"', r"\[train\]: optimizer = 'adam': choose sgd or adamw"),
    ("bench", 'gate = "speedup=2"', r"\[bench\]: gate = 'speedup=2'"),
    ("data", 'input_size = "big"', r"\[data\]: input_size = 'big': write HEIGHTxWIDTH"),
    ("search", 'rewind = "epoch:30"', r"\[search\]: rewind = epoch:30: level 0 trains 20 epochs"),
])
def test_bad_values_are_refused_before_any_stage_naming_file_section_and_key(tmp_path, section, line, match):
    sections = ["run", "data", "model", "train", "dense", "search", "export", "bench"]
    text = "".join(f"[{s}]\n" + (f"{line}\n" if s == section else "") for s in sections)
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(UserError, match=match) as e:
        run_pipeline(tmp_path / "x.toml", tmp_path / "run", progress=False, log=lambda m: None)
    assert str(tmp_path / "x.toml") in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_ticket_that_would_end_before_its_rewind_point_is_refused(tmp_path):
    (tmp_path / "x.toml").write_text("[run]\n[data]\n[model]\n[dense]\n[search]\nrewind = 'epoch:3'\n"
                                     "[ticket]\nepochs = 2\n[export]\n[bench]\n")
    with pytest.raises(UserError, match=r"x.toml \[ticket\]: epochs = 2: the ticket starts at .* epoch:3"):
        load_config(tmp_path / "x.toml")


@pytest.mark.slow
def test_the_ticket_of_a_late_rewound_search_starts_at_its_rewind_step(tmp_path):
    from edgeticket.data.dataset import PreparedData
    from edgeticket.pipeline.stages import Pipeline
    from edgeticket.train.optim import batch_plan

    text = TINY.replace("[dense]\nepochs = 1", "[dense]\nepochs = 2").replace(
        'levels = 3\nepochs = 1\nround_to = 2', 'levels = 2\nepochs = 2\nround_to = 2\nrewind = "epoch:1"').replace(
        "distill = true\n", "")  # no dense stage runs here, so no teacher
    (tmp_path / "late.toml").write_text(text)
    cfg = load_config(tmp_path / "late.toml")
    assert cfg.ticket.epochs == 2 and str(cfg.search.rewind) == "epoch:1"
    pipe = Pipeline(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    pipe.load_state()
    for stage in ("data", "prepare", "search", "select", "ticket"):  # what the ticket needs, no more
        pipe.mark(stage, getattr(pipe, f"stage_{stage}")(), 0.0)
    spe = batch_plan(PreparedData(pipe.cache()).count("train"), cfg.ticket)[1]
    rewind = tmp_path / "run" / "search" / "level_00" / paths.REWIND
    ticket = tmp_path / "run" / "finetune" / "ticket"
    meta = json.loads((ticket / paths.META).read_text())
    assert meta["start"] == {"weights": str(rewind.resolve()), "sha256": sha256_file(rewind), "step": spe}
    assert pipe.state["stages"]["ticket"]["start"]["rewind"] == "epoch:1"
    # it trains the dense model's remaining epoch, not two more from the rewind point
    assert [json.loads(x)["epoch"] for x in (ticket / paths.LOG).read_text().splitlines()] == [1]


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
