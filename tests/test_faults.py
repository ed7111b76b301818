"""Faults and bad input: kill-and-resume, pre-emption, a bad-input matrix, numerical faults.

The promise: nothing is lost and nothing is silently wrong. Processes are killed with SIGKILL
at chosen moments (``EDGETICKET_FAULT``, see ``edgeticket/faults.py``: deterministic points, never a wall-clock moment),
resumed with ``--resume``, and compared with an uninterrupted run of the same seed. After every
kill the run directory is scanned: every file that is there must load and be whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import SIZE
from typer.testing import CliRunner

from edgeticket import paths
from edgeticket.cli.app import app
from edgeticket.models import build_model
from edgeticket.models.card import ModelCard
from edgeticket.tickets.criteria.common import prunable_names
from edgeticket.tickets.mask import Mask

EXE = str(Path(sys.executable).with_name("edgeticket"))
COUNTS = {"kill_points_tried": 0, "kill_points_survived": 0, "bad_inputs_tried": 0, "files_corrupted": 0}
TRAIN = ["--batch-size", "4", "--optimizer", "adamw", "--lr", "0.001", "--decoder-lr-mult", "1", "--seed", "0",
         "--quiet"]


def pytest_terminal_summary_counts() -> str:
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in COUNTS.items())


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    Path(os.environ.get("EDGETICKET_FAULT_REPORT", "/tmp/edgeticket-faults.json")).write_text(json.dumps(COUNTS))


def run_cli(args, fault: str | None = None, timeout: float = 600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("EDGETICKET_FAULT", None)
    if fault:
        env["EDGETICKET_FAULT"] = fault
    proc = subprocess.Popen([EXE, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# -- scanning a run directory ------------------------------------------------------------------------

def scan(root: Path) -> list[str]:
    """Every artifact loads and is whole; returns the problems found (none expected)."""
    problems = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or (p.name.startswith(".") and p.name.endswith(".tmp")):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                lines = p.read_text().splitlines()
                for line in lines[:-1]:
                    json.loads(line)  # only the last line may be torn by a kill mid-append
            elif p.suffix in (".pt", ".pth"):
                obj = torch.load(p, weights_only=True)
                if p.name == paths.MASK:
                    assert obj and all(v.dtype == torch.bool for v in obj.values())
                if p.name == paths.LAST:
                    assert {"model", "optimizer", "epoch", "step_in_epoch"} <= set(obj)
            elif p.suffix in (".h5", ".mat") and p.name != "splits.mat":
                with h5py.File(p, "r") as f:
                    for k in f:
                        if isinstance(f[k], h5py.Dataset) and f[k].shape and f[k].shape[0]:
                            f[k][-1]
            elif p.suffix == ".onnx":
                import onnx

                onnx.checker.check_model(onnx.load(str(p)))
            elif p.suffix == ".png":
                from PIL import Image

                Image.open(p).verify()
        except Exception as e:  # noqa: BLE001 - any failure to load is what we look for
            problems.append(f"{p}: {type(e).__name__}: {e}")
    COUNTS["files_corrupted"] += len(problems)
    return problems


def kill_and_resume(args: list, out: Path, plan: list, timeout: float = 600) -> int:
    """Run ``args`` under each fault of ``plan`` in turn (each a resume), scanning after each kill."""
    survived = 0
    for fault in plan:
        code, _, err = run_cli(args, fault=fault, timeout=timeout)
        COUNTS["kill_points_tried"] += 1
        assert code in (-signal.SIGKILL, 0), (fault, code, err[-2000:])
        problems = scan(out) if out.exists() else []
        assert not problems, problems
        survived += 1
        if code == 0:  # the run finished before the fault point came
            break
    code, _, err = run_cli(args, timeout=timeout)
    assert code == 0, err[-3000:]
    assert not scan(out)
    COUNTS["kill_points_survived"] += survived
    return survived


# -- search ----------------------------------------------------------------------------------------------

def search_args(cache, out):
    return ["search", "--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--levels", "3", "--epochs", "2",
            "--criterion", "channel", "--round-to", "2", "--input-size", "48x64", "--val-fraction", "0.15",
            "--out", out, "--resume", *TRAIN]


def assert_same_search(a: Path, b: Path, levels: int = 3):
    for k in range(levels):
        ma, mb = Mask.load(paths.level_dir(a, k)), Mask.load(paths.level_dir(b, k))
        assert set(ma) == set(mb) and all(torch.equal(ma[n], mb[n]) for n in ma), f"level {k}: masks differ"
        ja = json.loads((paths.level_dir(a, k) / paths.METRICS).read_text())
        jb = json.loads((paths.level_dir(b, k) / paths.METRICS).read_text())
        for split in ("val", "test"):
            for key, v in ja[split].items():
                assert v == pytest.approx(jb[split][key], rel=1e-6, abs=1e-9), (k, split, key)


@pytest.mark.slow
def test_search_survives_sigkill_at_every_kind_of_moment(cache, tmp_path):
    ref = tmp_path / "ref"
    code, _, err = run_cli(search_args(cache, ref))
    assert code == 0, err
    rng = random.Random(0)
    steps_per_level = 2 * 2  # 2 epochs of 8 frames at batch 4... at least this many steps
    plan = [
        "start:1",  # before anything was saved
        f"step:{rng.randint(1, steps_per_level)}",  # mid-epoch
        f"write:{rng.randint(1, 6)}",  # a checkpoint (or mask, or metrics) write in progress
        "level:1",  # between levels
        "mask:1",  # during the mask computation
        f"step:{rng.randint(1, steps_per_level)}",
        f"write:{rng.randint(1, 12)}",
        f"step:{steps_per_level + 1}",  # the first step of level 1
    ]
    out = tmp_path / "killed"
    kill_and_resume(search_args(cache, out), out, plan)
    assert_same_search(out, ref)


# -- finetune --------------------------------------------------------------------------------------------

def finetune_args(cache, out, epochs=3):
    return ["finetune", "--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", str(epochs),
            "--out", out, "--resume", *TRAIN]


def assert_same_model(a: Path, b: Path):
    sa = torch.load(a / paths.MODEL, weights_only=True)
    sb = torch.load(b / paths.MODEL, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ja, jb = (json.loads((d / paths.METRICS).read_text()) for d in (a, b))
    assert ja["test"] == pytest.approx(jb["test"], rel=1e-9)


@pytest.fixture(scope="module")
def finetune_ref(cache, tmp_path_factory):
    ref = tmp_path_factory.mktemp("ftref") / "ref"
    code, _, err = run_cli(finetune_args(cache, ref))
    assert code == 0, err
    return ref


@pytest.mark.slow
def test_finetune_survives_sigkill(cache, finetune_ref, tmp_path):
    rng = random.Random(1)
    out = tmp_path / "killed"
    plan = ["start:1", "write:1", f"step:{rng.randint(1, 5)}", f"write:{rng.randint(2, 8)}", "step:6"]
    kill_and_resume(finetune_args(cache, out), out, plan)
    assert_same_model(out, finetune_ref)


@pytest.mark.parametrize("sig, code", [("TERM", 143), ("INT", 130)])
def test_preemption_saves_a_checkpoint_and_says_how_to_resume(cache, finetune_ref, tmp_path, sig, code):
    out = tmp_path / "pre"
    rc, _, err = run_cli(finetune_args(cache, out), fault=f"step:3:{sig}")
    assert rc == code, err
    assert "Traceback" not in err and "--resume" in err and f"SIG{sig}" in err
    state = torch.load(out / paths.LAST, weights_only=True)
    assert state["step_in_epoch"] == 1 and state["epoch"] == 1  # 2 steps per epoch: the 3rd is epoch 1's first
    assert not scan(out)
    rc, _, err = run_cli(finetune_args(cache, out))
    assert rc == 0, err
    assert_same_model(out, finetune_ref)


def test_external_sigint_stops_cleanly(cache, tmp_path):
    out = tmp_path / "ext"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([EXE, *map(str, finetune_args(cache, out, epochs=200))], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / paths.LAST).exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    assert not scan(out)


# -- pipeline --------------------------------------------------------------------------------------------

PIPE = """
[run]
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
[dense]
epochs = 1
[search]
criterion = "channel"
levels = 2
epochs = 1
round_to = 2
[search_unstructured]
criterion = "magnitude-global"
levels = 2
epochs = 1
[branches]
random_seeds = 0
[ticket]
epochs = 1
[export]
int8 = false
[bench]
runs = 2
warmup = 1
batch_size = 4
"""


@pytest.mark.slow
def test_pipeline_survives_sigkill(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(PIPE)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    code, _, err = run_cli(["pipeline", cfg, "--out", ref, "--quiet"])
    assert code == 0, err
    rng = random.Random(2)
    plan = [f"step:{rng.randint(2, 6)}", "level:1", f"write:{rng.randint(5, 30)}", "mask:1"]
    kill_and_resume(["pipeline", cfg, "--out", out, "--quiet"], out, plan)
    assert_same_search(out / "search", ref / "search", levels=2)
    for d in ("finetune/dense", "finetune/ticket"):
        assert_same_model(out / d, ref / d)
    ra = json.loads((out / "bench" / paths.REPORT_JSON).read_text())
    rb = json.loads((ref / "bench" / paths.REPORT_JSON).read_text())
    for ma, mb in zip(ra["models"], rb["models"], strict=True):
        assert ma["metrics"] == pytest.approx(mb["metrics"], rel=1e-6)


# -- bad-input matrix ----------------------------------------------------------------------------------

runner = CliRunner()


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _mat(path: Path, images=None, depths=None, n=2):
    from test_data import write_mat

    path.mkdir(parents=True, exist_ok=True)
    write_mat(path / "nyu_depth_v2_labeled.mat", images=images, depths=depths, n=n)
    from edgeticket.data.splits import write_splits_mat

    write_splits_mat(path / "splits.mat", np.array([0]), np.array([1]))
    return path


def _bad_depth(value):
    d = np.ones((2, 640, 480), np.float32)
    d[1, 7, 7] = value
    return d


@pytest.fixture(scope="module")
def world(cache, synth_dir, tmp_path_factory):
    """A finished finetune, a channel-search level and exports, to point bad input at."""
    root = tmp_path_factory.mktemp("world")
    from helpers import tiny_finetune_config, tiny_search_config, tiny_train_config

    from edgeticket.export.api import export
    from edgeticket.tickets.imp import search
    from edgeticket.train.finetune import finetune

    finetune(cache, root / "run", tiny_finetune_config(tiny_train_config(epochs=1)), progress=False)
    export(root / "run", root / "exp", progress=False)
    search(cache, root / "search", tiny_search_config(tiny_train_config(epochs=1), input_size=SIZE, val_fraction=0.15,
                                                      levels=1), progress=False)
    return root


def _case_files(kind: str, tmp: Path, world: Path, cache: Path, synth: Path) -> tuple[list, Path, str]:
    """(argv, output directory, the file or option the message must name) for one bad input."""
    out = tmp / "out"
    ft = ["finetune", "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", "1", "--quiet"]
    model = build_model("fcrn_tiny")
    good_mask = Mask.ones(model, prunable_names(model))
    if kind.startswith("data_"):
        what = kind[5:]
        if what == "truncated_hdf5":
            d = _mat(tmp / "d", n=2)
            f = d / "nyu_depth_v2_labeled.mat"
            f.write_bytes(f.read_bytes()[:5000])
        elif what == "wrong_dtype":
            d = _mat(tmp / "d", images=np.zeros((2, 3, 640, 480), np.float32))
        elif what == "swapped_dims":
            d = _mat(tmp / "d", images=np.zeros((2, 3, 480, 640), np.uint8), depths=np.ones((2, 480, 640), np.float32))
        elif what in ("nan_depth", "negative_depth", "inf_depth"):
            d = _mat(tmp / "d", depths=_bad_depth({"nan_depth": np.nan, "negative_depth": -2.0, "inf_depth": np.inf}[what]))
        elif what == "split_out_of_range":
            d = _mat(tmp / "d", n=2)
            from edgeticket.data.splits import write_splits_mat

            write_splits_mat(d / "splits.mat", np.array([0]), np.array([9]))
        elif what == "empty_folder":
            d = tmp / "d"
            d.mkdir()
        elif what == "path_is_a_file":
            d = tmp / "d.txt"
            d.write_text("not a dataset")
        return ["data", "prepare", d, "--out", out, "--input-size", "48x64", "--quiet"], out, str(d)
    if kind.startswith("mask_"):
        what = kind[5:]
        m = tmp / "mask.pt"
        if what == "wrong_arch":
            big = build_model("fcrn_resnet18")
            torch.save(dict(Mask.ones(big, prunable_names(big))), m)
        elif what == "wrong_shape":
            bad = dict(good_mask)
            bad["encoder.layer1.0.conv1.weight"] = torch.ones(3, 3, dtype=torch.bool)
            torch.save(bad, m)
        elif what == "non_binary":
            bad = {k: v.float() * 0.5 for k, v in good_mask.items()}
            torch.save(bad, m)
        elif what == "pickle_only":
            torch.save({"mask": good_mask, "note": Pickled()}, m)
        elif what == "foreign_keys":
            bad = dict(good_mask)
            bad["transformer.block.0.weight"] = torch.ones(4, dtype=torch.bool)
            torch.save(bad, m)
        return [*ft, "--data", cache, "--mask", m, "--out", out], out, str(m)
    if kind == "ckpt_another_arch":
        out = world / "run"
        return ["finetune", "--arch", "fcrn_resnet18", "--pretrained", "none", "--data", cache, "--out", out,
                "--resume", "--quiet"], out, str(out / paths.LAST)
    if kind == "ckpt_truncated":
        import shutil

        out = tmp / "copy"
        shutil.copytree(world / "run", out)
        last = out / paths.LAST
        last.write_bytes(last.read_bytes()[:2000])
        return [*ft, "--data", cache, "--out", out, "--resume"], out, str(last)
    base = world / "exp" / paths.ONNX
    bench = ["bench", base, "--data", synth, "--baseline", base, "--out", out, "--runs", "2", "--quiet"]
    if kind == "onnx_corrupt":
        f = tmp / "bad.onnx"
        f.write_bytes(b"\x08\x01not an onnx model at all")
        return [*bench, f], out, str(f)
    if kind == "onnx_no_metadata":
        from edgeticket.export.fold import fold_batchnorm
        from edgeticket.export.onnx_export import export_onnx

        f = tmp / "raw.onnx"
        export_onnx(fold_batchnorm(build_model("fcrn_tiny").eval()), f, SIZE, {})
        return [*bench, f], out, "--input-size"
    if kind == "onnx_mismatched_baseline":
        from edgeticket.export.fold import fold_batchnorm
        from edgeticket.export.onnx_export import export_onnx

        f = tmp / "small.onnx"
        card = ModelCard(input_size=(32, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        export_onnx(fold_batchnorm(build_model("fcrn_tiny").eval()), f, (32, 48), card.to_onnx_props())
        return [*bench, f], out, str(f)
    srch = ["search", "--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--input-size", "48x64",
            "--out", out, "--quiet"]
    options = {
        "opt_negative_rate": ([*srch, "--rate", "-0.2"], "--rate"),
        "opt_target_sparsity_one": ([*srch, "--target-sparsity", "1.0"], "--target-sparsity"),
        "opt_oneshot_sparsity_above_one": (["tickets", "branch", "oneshot", world / "search", "--level", "0",
                                            "--sparsity", "1.5", "--quiet"], "--sparsity"),
        "opt_levels_zero": ([*srch, "--levels", "0"], "--levels"),
        "opt_unknown_criterion": ([*srch, "--criterion", "snip"], "--criterion"),
        "opt_out_inside_data": ([*ft, "--data", synth, "--out", synth / "run"], "--out"),
        "opt_out_inside_data_bench": (["bench", base, "--data", synth, "--baseline", base, "--out", synth / "bench",
                                       "--quiet"], "--out"),
        "opt_malformed_gate": ([*bench, "--gate", "delta1_drop=<0.01"], "--gate"),
        "opt_unknown_gate_key": ([*bench, "--gate", "accuracy>=1"], "--gate"),
        "opt_malformed_input_size": ([*ft, "--data", cache, "--out", out, "--input-size", "228x"], "--input-size"),
        "opt_negative_lr": ([*ft, "--data", cache, "--out", out, "--lr", "-0.1"], "--lr"),
        "opt_unknown_arch": ([*ft, "--data", cache, "--out", out, "--arch", "fcrn_vgg16"], "--arch"),
    }
    argv, needle = options[kind]
    if kind == "opt_oneshot_sparsity_above_one":
        out = world / "search"
    if kind in ("opt_out_inside_data", "opt_out_inside_data_bench"):
        out = synth
    return argv, out, needle


class Pickled:
    """Any object: saving it makes a file that needs pickle."""


BAD_INPUTS = [
    "data_truncated_hdf5", "data_wrong_dtype", "data_swapped_dims", "data_nan_depth", "data_negative_depth",
    "data_inf_depth", "data_split_out_of_range", "data_empty_folder", "data_path_is_a_file",
    "mask_wrong_arch", "mask_wrong_shape", "mask_non_binary", "mask_pickle_only", "mask_foreign_keys",
    "ckpt_another_arch", "ckpt_truncated",
    "onnx_corrupt", "onnx_no_metadata", "onnx_mismatched_baseline",
    "opt_negative_rate", "opt_target_sparsity_one", "opt_oneshot_sparsity_above_one", "opt_levels_zero",
    "opt_unknown_criterion", "opt_out_inside_data", "opt_out_inside_data_bench", "opt_malformed_gate",
    "opt_unknown_gate_key", "opt_malformed_input_size", "opt_negative_lr", "opt_unknown_arch",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_matrix(kind, tmp_path, world, cache, synth_dir):
    argv, out, needle = _case_files(kind, tmp_path, world, cache, synth_dir)
    before = snapshot(out)
    synth_before = snapshot(synth_dir) if "inside_data" in kind else None
    res = runner.invoke(app, [str(a) for a in argv])
    COUNTS["bad_inputs_tried"] += 1
    text = res.output.strip()
    assert res.exit_code == 2, (kind, res.exit_code, text[-2000:])
    assert "Traceback" not in text
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeticket: error: "), text
    assert needle in lines[0], (needle, lines[0])
    assert snapshot(out) == before, "the output directory changed"
    if synth_before is not None:
        assert snapshot(synth_dir) == synth_before


# -- numerical faults ------------------------------------------------------------------------------------

def test_nan_in_a_batch_stops_the_run_naming_the_step(cache, tmp_path, monkeypatch):
    from edgeticket.train import losses

    out = tmp_path / "nan"
    real = losses.LOSSES["berhu"]
    calls = {"n": 0}

    def poisoned(pred, target):
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2, step 2 (2 steps per epoch)
            target = target.clone()
            target[0, 0, 0, 0] = float("inf")
            pred = pred + target * 0
        return real(pred, target)

    monkeypatch.setitem(losses.LOSSES, "berhu", poisoned)
    res = runner.invoke(app, ["finetune", "--data", str(cache), "--arch", "fcrn_tiny", "--pretrained", "none",
                              "--epochs", "3", "--out", str(out), *TRAIN])
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert "epoch 2, step 2" in msg and "NaN/inf" in msg and "--lr" in msg and "\n" not in msg
    last = torch.load(out / paths.LAST, weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not scan(out)


def test_extreme_channel_pruning_stops_at_one_group_and_says_so():
    from edgeticket.tickets.criteria import common as C
    from edgeticket.tickets.criteria.channel import prune_channels
    from edgeticket.tickets.groups import channel_groups, prunable_groups

    model = build_model("fcrn_tiny")
    scope = C.prunable_names(model)
    groups = prunable_groups(channel_groups(model), set(scope))
    res = prune_channels(dict(model.named_parameters()), C.with_bn_entries(Mask.ones(model, scope), groups), groups,
                         1e-6, round_to=4)
    for g in groups:
        assert int(C.channel_alive(res.mask, g).sum()) == min(4, g.channels)
    assert res.notes and all("floor" in n for n in res.notes)
    with torch.no_grad():
        res.mask.apply_(model)
        y = model.eval()(torch.randn(2, 3, *SIZE))
    assert y.std() > 0  # not a model that outputs a constant
