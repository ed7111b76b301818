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
                "--resume", "--quiet"], out, "model.arch"  # the run folder's identity names the changed setting
    if kind == "ckpt_truncated":
        import shutil

        out = tmp / "copy"
        shutil.copytree(world / "run", out)
        last = out / paths.LAST
        last.write_bytes(last.read_bytes()[:2000])
        same = ["--batch-size", "4", "--warmup-epochs", "0"]  # the world's run, so that only the file is wrong
        return [*ft, *same, "--data", cache, "--out", out, "--resume"], out, str(last)
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
    "onnx_corrupt", "onnx_no_metadata",  # models of different input sizes now bench together (issue 21)
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


# -- run folders: what a folder holds, one writer, inputs apart (issue 22) --------------------------

TINY_PIPE = PIPE.replace('source = "synth"', 'source = "{source}"')


def _tiny_dataset(folder: Path, n: int = 4, depth: float | None = None, train=(0, 1, 2), test=(3,)) -> Path:
    """A labeled .mat of n frames (constant depth when given) and its split: cheap data to refuse."""
    from test_data import random_frames, write_mat

    from edgeticket.data.splits import write_splits_mat

    folder.mkdir(parents=True, exist_ok=True)
    frames = random_frames(n)
    if depth is not None:
        frames = [(rgb, np.full_like(d, depth)) for rgb, d in frames]
    write_mat(folder / paths.LABELED, frames=frames)
    write_splits_mat(folder / paths.SPLITS_MAT, np.array(train), np.array(test))
    return folder


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _run_case(kind: str, tmp: Path, world: Path, cache: Path, synth: Path) -> tuple[list, list[Path], str]:
    """(argv, the folders that must not change, the file or option the message must name)."""
    ft = ["finetune", "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", "1", "--batch-size", "4",
          "--warmup-epochs", "0", "--quiet"]
    level, run, exp = paths.level_dir(world / "search", 0), world / "run", world / "exp"
    afile = tmp / "afile"
    afile.write_text("mine")
    if kind == "synth_over_a_dataset":
        d = _tiny_dataset(tmp / "d")
        return ["data", "synth", "--out", d, "--n", "8", "--workers", "1", "--quiet"], [d], "--out"
    if kind == "synth_over_other_synth":
        d = tmp / "s"
        code = runner.invoke(app, ["data", "synth", "--out", str(d), "--n", "8", "--workers", "1", "--quiet"]).exit_code
        assert code == 0
        return ["data", "synth", "--out", d, "--n", "9", "--workers", "1", "--quiet"], [d], "(frames)"
    if kind == "synth_out_is_a_file":
        return ["data", "synth", "--out", afile, "--n", "8", "--quiet"], [tmp], "--out"
    if kind == "prepare_over_a_finetune":
        return ["data", "prepare", _tiny_dataset(tmp / "d"), "--out", run, "--input-size", "48x64", "--quiet"], \
            [run], "fine-tuned model"
    if kind == "prepare_no_valid_depth":
        d = _tiny_dataset(tmp / "d", depth=0.0)  # depth all zero: nothing to learn or score
        return ["data", "prepare", d, "--out", tmp / "c", "--input-size", "48x64", "--val-fraction", "0.34",
                "--quiet"], [d / paths.LABELED, d / paths.SPLITS_MAT, tmp / "c"], "valid depth"
    if kind == "prepare_depth_out_of_range":
        d = _tiny_dataset(tmp / "d", depth=50.0)  # centimetres, not metres
        return ["data", "prepare", d, "--out", tmp / "c", "--input-size", "48x64", "--val-fraction", "0.34",
                "--quiet"], [d / paths.LABELED, d / paths.SPLITS_MAT, tmp / "c"], "not in metres"
    if kind == "split_duplicate_index":
        d = _tiny_dataset(tmp / "d", train=(0, 1, 1), test=(3,))
        return ["data", "prepare", d, "--out", tmp / "c", "--quiet"], [d], "more than once"
    if kind == "split_train_test_overlap":
        d = _tiny_dataset(tmp / "d", train=(0, 1, 2), test=(2, 3))
        return ["data", "prepare", d, "--out", tmp / "c", "--quiet"], [d], "in both trainNdxs and testNdxs"
    if kind == "export_into_its_level":
        return ["export", level, "--out", level, "--quiet"], [level], "--out"
    if kind == "export_into_a_finetune":
        return ["export", level, "--out", run, "--quiet"], [run, level], "fine-tuned model"
    if kind == "export_overwrite_a_finetune":
        return ["export", level, "--out", run, "--overwrite", "--quiet"], [run, level], "fine-tuned model"
    if kind == "export_out_is_a_file":
        return ["export", run, "--out", afile, "--quiet"], [tmp], "is a file"
    if kind == "export_out_inside_data":
        return ["export", run, "--data", synth, "--out", synth / "e", "--quiet"], [synth], "--out"
    if kind == "export_over_another_export":
        return ["export", level, "--out", exp, "--quiet"], [exp], "--overwrite"
    if kind in ("export_meta_no_input_size", "export_meta_unknown_arch", "export_meta_bad_std"):
        src = _copy(run, tmp / "src")
        meta = json.loads((src / paths.META).read_text())
        if kind == "export_meta_no_input_size":
            del meta["input_size"]
        elif kind == "export_meta_unknown_arch":
            meta["arch"] = "fcrn_vgg16"
        else:
            meta["std"] = [0.2, 0.0, 0.2]
        (src / paths.META).write_text(json.dumps(meta))
        return ["export", src, "--out", tmp / "e", "--quiet"], [src, tmp / "e"], str(src / paths.META)
    if kind == "finetune_resume_into_an_export":
        return [*ft, "--data", cache, "--out", exp, "--resume"], [exp], "ONNX export"
    if kind == "finetune_resume_into_a_level":
        return [*ft, "--data", cache, "--out", level, "--resume"], [level], "level of an IMP search"
    if kind == "finetune_into_a_dataset":
        d = _tiny_dataset(tmp / "d")
        return [*ft, "--data", cache, "--out", d, "--overwrite"], [d], "a dataset"
    if kind == "finetune_out_is_a_file":
        return [*ft, "--data", cache, "--out", afile], [tmp], "is a file"
    if kind == "finetune_out_holds_the_data":
        return [*ft, "--data", cache, "--out", cache.parent], [cache.parent], "--out"
    if kind == "finetune_into_foreign_files":
        d = tmp / "mine"
        d.mkdir()
        (d / "notes.txt").write_text("mine")
        return [*ft, "--data", cache, "--out", d, "--overwrite"], [d], "no edgeticket command wrote"
    if kind == "finetune_resume_other_data":
        other = tmp / "c2"
        from edgeticket.data.config import DataConfig
        from edgeticket.data.prepare import prepare

        prepare(_tiny_dataset(tmp / "d"), other, DataConfig(input_size=SIZE, val_fraction=0.34), progress=False)
        return [*ft, "--data", other, "--out", _copy(run, tmp / "r"), "--resume"], [tmp / "r"], "data.cache_key"
    if kind == "finetune_resume_other_mask":
        model = build_model("fcrn_tiny")
        torch.save(dict(Mask.ones(model, prunable_names(model))), tmp / "m.pt")
        return [*ft, "--data", cache, "--mask", tmp / "m.pt", "--out", _copy(run, tmp / "r"), "--resume"], \
            [tmp / "r"], "mask"
    if kind == "finetune_resume_other_seed":
        return [*ft, "--data", cache, "--seed", "7", "--out", _copy(run, tmp / "r"), "--resume"], [tmp / "r"], \
            "train.seed"
    if kind == "finetune_init_needs_pickle":
        torch.save({"w": torch.ones(1), "note": Pickled()}, tmp / "w.pt")
        return [*ft, "--data", cache, "--init-from", tmp / "w.pt", "--out", tmp / "o"], [tmp / "o"], \
            str(tmp / "w.pt")
    if kind == "search_resume_into_a_finetune":
        return ["search", "--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--levels", "1",
                "--out", run, "--resume", "--quiet"], [run], "fine-tuned model"
    if kind == "import_into_a_finetune":
        model = build_model("fcrn_tiny")
        torch.save({f"{k.removeprefix('encoder.')}_mask": v for k, v in Mask.ones(model, prunable_names(model)).items()},
                   tmp / "t.pth")
        return ["tickets", "import", tmp / "t.pth", "--arch", "fcrn_tiny", "--out", run], [run], "fine-tuned model"
    if kind == "import_out_holds_the_file":
        (tmp / "t").mkdir()
        (tmp / "t" / "t.pth").write_bytes(b"x")
        return ["tickets", "import", tmp / "t" / "t.pth", "--arch", "fcrn_tiny", "--out", tmp / "t"], [tmp / "t"], \
            "ticket file"
    if kind == "bench_into_an_export":
        base = exp / paths.ONNX
        return ["bench", base, "--data", synth, "--baseline", base, "--out", exp, "--quiet"], [exp], "--out"
    if kind == "bench_out_is_a_file":
        base = exp / paths.ONNX
        return ["bench", base, "--data", synth, "--baseline", base, "--out", afile, "--quiet"], [tmp], "is a file"
    if kind == "bench_into_a_level":
        base = exp / paths.ONNX
        return ["bench", base, "--data", synth, "--baseline", base, "--out", level, "--quiet"], [level], \
            "level of an IMP search"
    if kind in ("pipeline_out_inside_data", "pipeline_overwrite_a_finetune", "pipeline_levels_text"):
        cfg = tmp / "p.toml"
        text = TINY_PIPE.replace("{source}", str(synth) if kind == "pipeline_out_inside_data" else "synth")
        if kind == "pipeline_levels_text":
            text = text.replace("levels = 2\nepochs = 1\nround_to", 'levels = "two"\nepochs = 1\nround_to')
        cfg.write_text(text)
        out = {"pipeline_out_inside_data": synth / "run", "pipeline_overwrite_a_finetune": run}.get(kind, tmp / "p")
        return ["pipeline", cfg, "--out", out, "--overwrite", "--quiet"], [out, synth], \
            {"pipeline_levels_text": "levels"}.get(kind, "--out")
    raise AssertionError(kind)


RUN_CASES = [
    "synth_over_a_dataset", "synth_over_other_synth", "synth_out_is_a_file", "prepare_over_a_finetune",
    "prepare_no_valid_depth", "prepare_depth_out_of_range", "split_duplicate_index", "split_train_test_overlap",
    "export_into_its_level", "export_into_a_finetune", "export_overwrite_a_finetune", "export_out_is_a_file",
    "export_out_inside_data", "export_over_another_export", "export_meta_no_input_size", "export_meta_unknown_arch",
    "export_meta_bad_std", "finetune_resume_into_an_export", "finetune_resume_into_a_level", "finetune_into_a_dataset",
    "finetune_out_is_a_file", "finetune_out_holds_the_data", "finetune_into_foreign_files",
    "finetune_resume_other_data", "finetune_resume_other_mask", "finetune_resume_other_seed",
    "finetune_init_needs_pickle", "search_resume_into_a_finetune", "import_into_a_finetune",
    "import_out_holds_the_file", "bench_into_an_export", "bench_out_is_a_file", "bench_into_a_level",
    "pipeline_out_inside_data", "pipeline_overwrite_a_finetune", "pipeline_levels_text",
]


def _refused(argv: list, watched: list[Path], needle: str) -> str:
    """Run a command that must be refused: exit 2, one sentence naming ``needle``, watched folders untouched."""
    before = {str(w): snapshot(w) if w.is_dir() else (w.read_bytes() if w.is_file() else None) for w in watched}
    res = runner.invoke(app, [str(a) for a in argv])
    COUNTS["bad_inputs_tried"] += 1
    text = res.output.strip()
    assert res.exit_code == 2, (argv, res.exit_code, text[-2000:])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeticket: error: "), text
    assert needle in lines[0], (needle, lines[0])
    for w in watched:
        after = snapshot(w) if w.is_dir() else (w.read_bytes() if w.is_file() else None)
        assert after == before[str(w)], f"{w} changed"
    return lines[0]


@pytest.mark.parametrize("kind", RUN_CASES)
def test_run_folders_refuse_what_they_must(kind, tmp_path, world, cache, synth_dir):
    msg = _refused(*_run_case(kind, tmp_path, world, cache, synth_dir))
    if kind == "finetune_init_needs_pickle":
        assert "--allow-pickle" not in msg  # finetune has no such option
    if kind == "export_meta_unknown_arch":
        assert "--arch" not in msg  # the value came from the file, not from an option


# Values refused at the edge by the stage dataclasses, before any file is read (paths need not exist).
_FT = ["finetune", "--data", "nowhere", "--out", "nowhere-out"]
_SR = ["search", "--data", "nowhere", "--out", "nowhere-out"]
_BN = ["bench", "a.onnx", "--data", "nowhere", "--baseline", "a.onnx", "--out", "nowhere-out"]
VALUE_CASES = [
    ([*_FT, "--decoder-lr-mult", "nan"], "--decoder-lr-mult"), ([*_FT, "--weight-decay", "inf"], "--weight-decay"),
    ([*_FT, "--warmup-epochs", "nan"], "--warmup-epochs"), ([*_FT, "--seed", "-1"], "--seed"),
    ([*_FT, "--compile-mode", "bogus"], "--compile-mode"), ([*_FT, "--lr", "inf"], "--lr"),
    ([*_FT, "--momentum", "1"], "--momentum"), ([*_FT, "--batch-size", "0"], "--batch-size"),
    ([*_FT, "--epochs", "0"], "--epochs"), ([*_FT, "--guard-factor", "1"], "--guard-factor"),
    ([*_FT, "--val-fraction", "1"], "--val-fraction"), ([*_FT, "--split-seed", "-1"], "--split-seed"),
    ([*_FT, "--val-carve", "room"], "--val-carve"), ([*_FT, "--optimizer", "lamb"], "--optimizer"),
    ([*_FT, "--loss", "l3"], "--loss"), ([*_FT, "--amp", "fp8"], "--amp"),
    ([*_FT, "--eval-batch-size", "0"], "--eval-batch-size"), ([*_FT, "--weight-decay", "-1e-4"], "--weight-decay"),
    ([*_SR, "--rate", "nan"], "--rate"), ([*_SR, "--round-to", "0"], "--round-to"),
    ([*_SR, "--rewind", "later"], "--rewind"), ([*_BN, "--batch-size", "100000"], "--batch-size"),
    ([*_BN, "--runs", "0"], "--runs"), ([*_BN, "--threads", "0"], "--threads"), ([*_BN, "--limit", "0"], "--limit"),
    ([*_BN, "--std", "0,0.2,0.2"], "--std"), ([*_BN, "--mean", "nan,0,0"], "--mean"),
    (["data", "synth", "--out", "x", "--n", "3"], "--n"), (["data", "synth", "--out", "x", "--views", "0"], "--views"),
    (["data", "synth", "--out", "x", "--seed", "-1"], "--seed"),
    (["data", "synth", "--out", "x", "--workers", "0"], "--workers"),
    (["export", "src", "--out", "x", "--calib-images", "0"], "--calib-images"),
]


@pytest.mark.parametrize("argv, needle", VALUE_CASES, ids=[" ".join(a[-2:]) for a, _ in VALUE_CASES])
def test_every_bad_value_is_one_sentence_naming_its_option(argv, needle, tmp_path):
    argv = [str(tmp_path / a) if a.startswith("nowhere") else a for a in argv]
    _refused(argv, [tmp_path], needle)


HOLD_LOCK = """
import sys, time
from edgeticket.runs import FolderLock
with FolderLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("command", ["finetune", "export", "synth", "branch"])
def test_a_second_writer_is_refused_naming_the_first(command, tmp_path, world, cache):
    src = {"export": "exp", "branch": "search"}.get(command, "run")
    out = _copy(world / src, tmp_path / "busy")
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        argv = {"finetune": ["finetune", "--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs",
                             "1", "--batch-size", "4", "--warmup-epochs", "0", "--out", out, "--resume", "--quiet"],
                "export": ["export", world / "run", "--out", out, "--overwrite", "--quiet"],
                "synth": ["data", "synth", "--out", out, "--n", "8", "--quiet"],
                "branch": ["tickets", "branch", "random", out, "--level", "1", "--quiet"]}[command]
        _refused(argv, [out], f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.wait()


def _one_sentence(res, needle: str) -> str:
    COUNTS["bad_inputs_tried"] += 1
    text = res.output.strip()
    assert res.exit_code == 2, (res.exit_code, text[-2000:])
    assert "Traceback" not in text and (res.exception is None or isinstance(res.exception, SystemExit))
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeticket: error: ") and needle in lines[0], text
    return lines[0]


def _int_input_onnx(path: Path) -> None:
    """A one-node model whose input is int64 (a token-id model, say): not an image model."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)
    graph = helper.make_graph([node], "ids", [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 3, *SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, *SIZE])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_an_onnx_model_with_an_int64_input_is_one_sentence(world, synth_dir, tmp_path):
    f = tmp_path / "ids.onnx"
    _int_input_onnx(f)
    base = world / "exp" / paths.ONNX
    res = runner.invoke(app, ["bench", str(f), "--data", str(synth_dir), "--baseline", str(base), "--out",
                              str(tmp_path / "b"), "--runs", "2", "--quiet", "--input-size", "48x64",
                              "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"])
    line = _one_sentence(res, str(f))
    assert "tensor(int64)" in line and "float32" in line and not (tmp_path / "b").exists()


def test_a_batch_bigger_than_free_memory_is_refused_with_the_estimate(world, synth_dir, tmp_path, monkeypatch):
    from edgeticket.bench import memory

    base = world / "exp" / paths.ONNX
    peak, weights = memory.activation_peak_bytes(base)
    # independent: the largest activation of the graph at batch 1 is a floor of the live peak
    import onnx
    from onnx import shape_inference

    g = shape_inference.infer_shapes(onnx.load(str(base))).graph
    inits = {t.name for t in g.initializer}
    sizes = [4 * int(np.prod([d.dim_value or 1 for d in v.type.tensor_type.shape.dim])) for v in g.value_info
             if v.name not in inits]
    assert max(sizes) <= peak <= sum(sizes) + 4 * 3 * SIZE[0] * SIZE[1]
    from onnx import numpy_helper

    assert weights == sum(numpy_helper.to_array(t).nbytes for t in g.initializer)
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 * 2**20)  # 64 MiB free
    res = runner.invoke(app, ["bench", str(base), "--data", str(synth_dir), "--baseline", str(base), "--out",
                              str(tmp_path / "b"), "--runs", "2", "--quiet", "--batch-size", "1024"])
    line = _one_sentence(res, "--batch-size 1024")
    assert "0.1 GiB free" in line and "smaller --batch-size" in line and not (tmp_path / "b").exists()
    est = memory.bench_estimate([str(base)], 1024, 4)
    assert est["batch"] == 1024 * (peak + memory.FRAME_BYTES) and est["total"] > 64 * 2**20


def test_a_png_dataset_whose_depth_is_all_zero_is_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "data" / "nyu2_test"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((480, 640, 3), 40 * i, np.uint8)).save(folder / f"{i:05d}_colors.png")
        Image.fromarray(np.zeros((480, 640), np.uint16)).save(folder / f"{i:05d}_depth.png")
    out = tmp_path / "cache"
    res = runner.invoke(app, ["data", "prepare", str(folder), "--out", str(out), "--input-size", "48x64", "--quiet"])
    line = _one_sentence(res, "valid depth pixel")
    assert str(folder) in line and not out.exists()


def test_a_read_only_file_system_is_one_sentence_and_keeps_the_run(cache, tmp_path, monkeypatch):
    """EROFS on every file committed into the folder (tests run as root, whom a chmod does not stop,
    and cannot mount): one sentence naming the folder, exit 2, the finished run as it was."""
    import errno

    out = tmp_path / "ft"
    assert runner.invoke(app, [*map(str, finetune_args(cache, out, epochs=1))]).exit_code == 0
    before = snapshot(out)
    real = os.replace

    def read_only(src, dst, *a, **k):
        if str(out) in str(dst):
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", read_only)
    res = runner.invoke(app, [*map(str, finetune_args(cache, out, epochs=1)), "--overwrite"])
    line = _one_sentence(res, "cannot write there: the file system is read-only")
    assert str(out) in line
    monkeypatch.setattr(os, "replace", real)
    assert snapshot(out) == before


def test_a_full_disk_is_one_sentence_and_keeps_what_was_there(cache, tmp_path):
    """A file-size limit (EFBIG, as a full or read-only disk refuses a write): one sentence, exit 2."""
    import resource

    out = tmp_path / "ft"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # meta.json fits, last.pt does not

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([EXE, *map(str, finetune_args(cache, out, epochs=1))], env=env, capture_output=True,
                          text=True, preexec_fn=limit, timeout=600)
    COUNTS["bad_inputs_tried"] += 1
    err = proc.stderr.strip()
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"edgeticket: error: {out}: cannot write there: a file would exceed the file-size limit")
    assert not scan(out)


# -- multi-file artifacts as one unit: kills while staging and between the renames ----------------

def _dataset_frames(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, depths, train, test) of a dataset folder, through the real reader (its split checked)."""
    from edgeticket.data.nyu import open_with_split

    source, split = open_with_split(folder, 0.0)
    try:
        frames = [source.read(i) for i in range(len(source))]
    finally:
        source.close()
    return (np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames]), np.sort(split.train),
            np.sort(split.test))


def _assert_same_dataset(a: Path, b: Path) -> None:
    for x, y in zip(_dataset_frames(a), _dataset_frames(b), strict=True):
        assert np.array_equal(x, y)


def _killed(args: list, fault: str) -> None:
    code, _, err = run_cli(args, fault=fault)
    COUNTS["kill_points_tried"] += 1
    assert code == -signal.SIGKILL, (fault, code, err[-2000:])


@pytest.mark.slow
def test_synth_killed_anywhere_leaves_the_old_set_or_the_new_one(tmp_path):
    synth = ["data", "synth", "--workers", "1", "--quiet"]
    ref8, ref9, out = tmp_path / "ref8", tmp_path / "ref9", tmp_path / "out"
    for ref, n in ((ref8, "8"), (ref9, "9")):
        assert run_cli([*synth, "--n", n, "--out", ref])[0] == 0
    # a first run killed while the .mat is written, then between the two renames: a rerun finishes it
    for fault in ("write:1", "swap:1"):
        _killed([*synth, "--n", "8", "--out", out], fault)
        assert not out.exists() or not any(p.name != paths.RUN_MARKER for p in out.iterdir())
        assert not scan(tmp_path)
        COUNTS["kill_points_survived"] += 1
    code, stdout, err = run_cli([*synth, "--n", "8", "--out", out])  # no --overwrite needed
    assert code == 0, err
    _assert_same_dataset(out, ref8)
    # --overwrite with other frames, killed while staging (the split too): the old set is whole
    for fault in ("write:1", "write:2"):
        _killed([*synth, "--n", "9", "--out", out, "--overwrite"], fault)
        _assert_same_dataset(out, ref8)
        COUNTS["kill_points_survived"] += 1
    # ... killed between the renames: no folder for a moment, never new splits beside old frames
    _killed([*synth, "--n", "9", "--out", out, "--overwrite"], "swap:1")
    assert not out.exists()
    code, stdout, err = run_cli([*synth, "--n", "9", "--out", out])  # the rerun finishes the swap
    assert code == 0 and "already holds" in stdout, err
    _assert_same_dataset(out, ref9)
    COUNTS["kill_points_survived"] += 1
    assert not [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]
    assert not scan(tmp_path)


def _export_unit(out: Path) -> str:
    """The one source every file of an export describes (its sha256); fails on a mix of two exports."""
    from helpers import onnx_props

    rep = json.loads((out / paths.EXPORT_JSON).read_text())
    meta = json.loads((out / paths.META).read_text())
    sha = onnx_props(out / paths.ONNX)["source_sha256"]
    assert rep["metadata"]["edgeticket.source_sha256"] == meta["source_sha256"] == sha
    from edgeticket.models.store import load_model_dir

    load_model_dir(out)  # model.pt fits meta.json's widths
    assert rep["onnx"] == str((out / paths.ONNX).resolve())
    return sha


@pytest.mark.slow
def test_export_killed_anywhere_leaves_one_whole_export(world, tmp_path):
    from edgeticket.fsio import sha256_file

    level0, level1 = paths.level_dir(world / "search", 0), world / "run"
    out = tmp_path / "exp"
    assert run_cli(["export", level0, "--out", out, "--quiet"])[0] == 0
    old = _export_unit(out)
    assert old == sha256_file(level0 / paths.MODEL)
    args = ["export", level1, "--out", out, "--overwrite", "--quiet"]
    for fault in ("write:1", "write:3", "write:5"):  # model.pt, export.json, the marker: all in the staging folder
        _killed(args, fault)
        assert _export_unit(out) == old and not scan(out)
        COUNTS["kill_points_survived"] += 1
    _killed(args, "swap:1")
    assert not out.exists()
    code, _, err = run_cli(["export", level1, "--out", out, "--quiet"])  # finishes the swap; same identity
    assert code == 0, err
    assert _export_unit(out) == sha256_file(level1 / paths.MODEL) and not scan(out)
    COUNTS["kill_points_survived"] += 1
    assert not [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]
