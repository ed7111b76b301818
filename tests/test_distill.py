"""--distill: the loss term, the teacher in meta.json, resume keeping it, and bad teachers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgeticket import paths
from edgeticket.cli.app import app
from edgeticket.data.augment import augment, sample_params
from edgeticket.fsio import sha256_file
from edgeticket.models import build_model
from edgeticket.tickets.criteria.common import prunable_names
from edgeticket.tickets.mask import Mask
from edgeticket.train.config import TrainConfig
from edgeticket.train.distill import Teacher, distill_l1
from edgeticket.train.losses import berhu
from edgeticket.train.trainer import _NO_AUG, Trainer

runner = CliRunner()
TINY = ["--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "8",
        "--warmup-epochs", "0", "--quiet"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_distill_l1_is_the_mean_abs_difference_on_pixels_with_ground_truth():
    g = torch.Generator().manual_seed(0)
    pred, teach = torch.rand(2, 1, 5, 6, generator=g) * 4, torch.rand(2, 1, 5, 6, generator=g) * 4
    target = torch.rand(2, 1, 5, 6, generator=g) * 3
    target[target < 1.0] = 0  # missing depth
    p, t, y = pred.numpy().ravel(), teach.numpy().ravel(), target.numpy().ravel()
    expected = np.mean([abs(a - b) for a, b, c in zip(p, t, y, strict=True) if c > 0])
    assert distill_l1(pred, teach, target).item() == pytest.approx(expected, rel=1e-6)


def test_train_step_adds_the_weight_times_l1_to_the_teacher(prepared, tmp_path):
    torch.manual_seed(0)
    student, teacher = build_model("fcrn_tiny"), build_model("fcrn_tiny")
    with torch.no_grad():
        teacher.head.bias.fill_(4.0)  # a teacher whose depth differs clearly from the student's
    cfg = TrainConfig(epochs=1, batch_size=4, augment=False, distill="unused", distill_weight=0.7)
    before = copy.deepcopy(student).eval()
    tr = Trainer(student, prepared, cfg, tmp_path / "o", meta={"arch": "fcrn_tiny"},
                 teacher=Teacher(teacher, {"teacher": "t", "sha256": "0" * 64}))
    assert tr.meta["distill"]["weight"] == 0.7 and not any(p.requires_grad for p in tr.teacher.parameters())
    train = prepared.load("train")
    idx = torch.arange(4)
    params = sample_params(4, _NO_AUG, torch.Generator().manual_seed(1))
    x, target = augment(train.rgb[:4], train.depth[:4], params)
    with torch.no_grad():
        before.train()  # the step runs the student in train mode (BN on batch statistics)
        pred = before(x)
        teacher.eval()
        soft = teacher(x)
    valid = target > 0
    expected = berhu(pred, target).item() + 0.7 * (pred - soft).abs()[valid].mean().item()
    got = tr.train_step(train, idx, params, 1.0).item()
    assert got == pytest.approx(expected, rel=1e-4)
    assert expected > berhu(pred, target).item() + 0.5  # the term is not negligible here: the test can fail


@pytest.fixture(scope="module")
def dense_dir(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "d"
    res = run("finetune", "--data", cache, "--out", out, *TINY)
    assert res.exit_code == 0, res.output
    return out


def _mask_file(tmp_path):
    model = build_model("fcrn_tiny")
    mask = Mask.ones(model, prunable_names(model))
    g = torch.Generator().manual_seed(0)
    for k in list(mask):
        mask[k] = torch.rand(mask[k].shape, generator=g) > 0.5
    mask.save(tmp_path / "mask.pt")
    return tmp_path / "mask.pt"


def test_finetune_a_ticket_with_distill_records_its_teacher_and_resume_keeps_it(cache, dense_dir, tmp_path):
    out = tmp_path / "t"
    mask = _mask_file(tmp_path)
    res = run("finetune", "--data", cache, "--out", out, "--mask", mask, "--distill", dense_dir, "--distill-weight", "0.5",
              *TINY)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / paths.META).read_text())
    d = meta["distill"]
    assert d["teacher"] == str(dense_dir.resolve()) and d["sha256"] == sha256_file(dense_dir / paths.MODEL)
    assert d["weight"] == 0.5 and d["arch"] == "fcrn_tiny" and meta["train"]["distill"] == str(dense_dir)
    changed = tmp_path / "changed"  # a copy of the teacher, elsewhere
    changed.mkdir()
    for f in (paths.META, paths.MODEL):
        (changed / f).write_bytes((dense_dir / f).read_bytes())
    # resume with another teacher (or none) is another run
    for other in (["--distill", changed], []):
        res = run("finetune", "--data", cache, "--out", out, "--mask", mask, "--distill-weight", "0.5", "--resume",
                  *other, *TINY)
        assert res.exit_code == 2 and "other settings (train.distill)" in res.output, res.output
    # the same path with other weights in it is not the same teacher
    res = run("finetune", "--data", cache, "--out", tmp_path / "t2", "--mask", mask, "--distill", changed, *TINY)
    assert res.exit_code == 0, res.output
    sd = torch.load(changed / paths.MODEL, weights_only=True)
    sd["head.bias"] = sd["head.bias"] + 1.0
    torch.save(sd, changed / paths.MODEL)
    res = run("finetune", "--data", cache, "--out", tmp_path / "t2", "--mask", mask, "--distill", changed, "--resume",
              *TINY)
    assert res.exit_code == 2 and "resume with the same teacher" in res.output, res.output


def test_a_teacher_inside_the_out_folder_is_refused(cache, dense_dir, tmp_path):
    res = run("finetune", "--data", cache, "--out", dense_dir.parent, "--distill", dense_dir, "--overwrite", *TINY)
    assert res.exit_code == 2 and "lies in --out" in res.output, res.output
    assert (dense_dir / paths.MODEL).exists()  # --overwrite did not clear the teacher


@pytest.mark.parametrize("problem", ["missing", "not_a_model_dir", "corrupt_weights", "other_arch_weights"])
def test_a_bad_teacher_exits_2_with_one_sentence(cache, dense_dir, tmp_path, problem):
    teacher = tmp_path / "teacher"
    if problem != "missing":
        teacher.mkdir()
    if problem in ("corrupt_weights", "other_arch_weights"):
        (teacher / paths.META).write_bytes((dense_dir / paths.META).read_bytes())
    if problem == "corrupt_weights":
        (teacher / paths.MODEL).write_bytes(b"not a checkpoint")
    elif problem == "other_arch_weights":
        torch.save(build_model("fcrn_resnet18").state_dict(), teacher / paths.MODEL)
    out = tmp_path / "o"
    res = run("finetune", "--data", cache, "--out", out, "--distill", teacher, *TINY)
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert msg.count("\n") == 0 and "Traceback" not in msg and f"--distill {teacher}" in msg, msg
    assert not out.exists()  # refused before anything was written


def test_search_distils_every_level(cache, dense_dir, tmp_path):
    out = tmp_path / "s"
    res = run("search", "--data", cache, "--out", out, "--levels", "2", "--criterion", "magnitude-global",
              "--distill", dense_dir, *TINY)
    assert res.exit_code == 0, res.output
    for level in (0, 1):
        meta = json.loads((paths.level_dir(out, level) / paths.META).read_text())
        assert meta["distill"]["sha256"] == sha256_file(dense_dir / paths.MODEL)
