"""Losses, metrics and the trainer's invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_finetune_config, tiny_train_config

from edgeticket import paths
from edgeticket.errors import DivergenceError, UserError
from edgeticket.models import build_model
from edgeticket.tickets.criteria.common import prunable_names
from edgeticket.tickets.mask import Mask
from edgeticket.train.evaluate import mean_depth_baseline
from edgeticket.train.finetune import finetune
from edgeticket.train.losses import berhu, l1, silog
from edgeticket.train.metrics import METRIC_KEYS, MetricAccumulator, compute_metrics
from edgeticket.train.trainer import Trainer

# -- losses -------------------------------------------------------------------------------------

def test_berhu_hand_computed():
    pred = torch.tensor([1.0, 2.0, 3.0, 5.0, 9.0])
    target = torch.tensor([1.5, 2.0, 0.0, 4.0, 4.0])  # the third pixel is missing (0)
    # residuals over valid pixels: -0.5, 0, 1, 5 -> c = 0.2 * 5 = 1
    # |x| <= c: 0.5, 0, 1 ; above: (25 + 1) / 2 = 13 -> mean over 4 valid pixels
    assert berhu(pred, target).item() == pytest.approx((0.5 + 0 + 1 + 13) / 4)


def test_berhu_ignores_missing_depth_and_handles_zero_residual():
    t = torch.tensor([2.0, 0.0, 3.0])
    assert berhu(torch.tensor([2.0, 100.0, 3.0]), t).item() == 0.0
    p = torch.tensor([2.0, 1.0, 3.0], requires_grad=True)
    berhu(p, t).backward()
    assert torch.isfinite(p.grad).all()


def test_l1_and_silog():
    pred, target = torch.tensor([1.0, 4.0, 7.0]), torch.tensor([2.0, 0.0, 7.0])
    assert l1(pred, target).item() == pytest.approx(0.5)
    d = np.log([1.0, 7.0]) - np.log([2.0, 7.0])
    assert silog(pred, target).item() == pytest.approx((d ** 2).mean() - 0.5 * d.mean() ** 2, rel=1e-5)
    # scale invariance with lambda = 1
    assert silog(pred[::2] * 3, target[::2], lam=1.0).item() == pytest.approx(silog(pred[::2], target[::2], lam=1.0).item(), abs=1e-6)


# -- metrics ------------------------------------------------------------------------------------

def numpy_metrics(pred_small: np.ndarray, gt: np.ndarray) -> dict:
    """An independent implementation: upsample, clip, Eigen crop, per image then mean."""
    up = torch.nn.functional.interpolate(torch.from_numpy(pred_small).double(), size=gt.shape[-2:],
                                         mode="bilinear", align_corners=False).numpy()
    rows = []
    for p, g in zip(up[:, 0], gt[:, 0], strict=True):
        p = np.clip(p, 1e-3, 10)
        crop = np.zeros_like(g, dtype=bool)
        crop[45:471, 41:601] = True
        v = crop & (g > 1e-3) & (g < 10)  # strict at both ends, as BTS and AdaBins
        p, g = p[v], g[v].astype(np.float64)
        thr = np.maximum(p / g, g / p)
        rows.append([
            np.mean(np.abs(p - g) / g), np.mean((p - g) ** 2 / g), np.sqrt(np.mean((p - g) ** 2)),
            np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)), np.mean(np.abs(np.log10(p) - np.log10(g))),
            np.mean(thr < 1.25), np.mean(thr < 1.25 ** 2), np.mean(thr < 1.25 ** 3),
        ])
    return dict(zip(METRIC_KEYS, np.mean(rows, axis=0), strict=True))


def _fake_batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 9.0, (n, 1, 480, 640)).astype(np.float32)
    gt[:, :, :60] = 0  # missing depth
    gt[:, :, 100:120, 100:200] = 12.0  # beyond 10 m: not scored
    gt[:, :, 200:260, 300:400] = 10.0  # a nyu2 PNG's 10000 mm: not scored either (strict <)
    pred = (rng.uniform(0.3, 11.0, (n, 1, 60, 80))).astype(np.float32)
    return pred, gt


def test_metrics_match_an_independent_numpy_computation():
    pred, gt = _fake_batch()
    ours = compute_metrics(torch.from_numpy(pred), torch.from_numpy(gt))
    ref = numpy_metrics(pred, gt)
    for k in METRIC_KEYS:
        assert ours[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


def bts_prediction(pred: np.ndarray) -> np.ndarray:
    """BTS's bts_eval.py on a prediction, written out: clip, then inf -> max and NaN -> min."""
    p = pred.copy()
    with np.errstate(invalid="ignore"):
        p[p < 1e-3] = 1e-3
        p[p > 10] = 10
    p[np.isinf(p)] = 10
    p[np.isnan(p)] = 1e-3
    return p


def test_gt_of_exactly_10_m_is_not_scored():
    gt = torch.full((1, 1, 480, 640), 10.0)
    gt[..., :240, :] = 2.0
    pred = torch.full((1, 1, 60, 80), 2.0)  # right wherever it is scored
    m = compute_metrics(pred, gt)
    assert m["abs_rel"] == 0.0 and m["delta1"] == 1.0 and m["n_images"] == 1


def test_a_nan_model_scores_like_bts_and_is_counted():
    pred, gt = _fake_batch(4, seed=2)
    pred = pred.clip(0.5, 9.0)  # in range, so that BTS's clip before upsampling and ours after agree
    pred[0] = np.nan  # diverged
    pred[1, :, :20] = np.nan
    pred[2, :, 10:30, 5:9] = np.inf
    pred[3, :, 40:, :] = -np.inf
    ours = compute_metrics(torch.from_numpy(pred), torch.from_numpy(gt))
    ref = numpy_metrics(bts_prediction(pred), gt)
    for k in METRIC_KEYS:
        assert math.isfinite(ours[k]), k
        assert ours[k] == pytest.approx(ref[k], rel=1e-6), k
    assert ours["nonfinite"] == int((~np.isfinite(pred)).sum()) == 80 * 60 + 20 * 80 + 20 * 4 + 20 * 80


def test_metrics_stay_finite_for_huge_predictions():
    _, gt = _fake_batch(2, seed=3)
    pred = torch.full((2, 1, 60, 80), 3.0e38)
    pred[1, :, ::2] = -3.0e38
    m = compute_metrics(pred, torch.from_numpy(gt))
    assert all(math.isfinite(m[k]) for k in METRIC_KEYS) and m["nonfinite"] == 0


def test_delta_is_strict():
    gt = torch.full((1, 1, 480, 640), 2.0)
    pred = torch.full((1, 1, 480, 640), 2.5)  # ratio exactly 1.25
    assert compute_metrics(pred, gt)["delta1"] == 0.0
    assert compute_metrics(pred, gt)["delta2"] == 1.0


def test_metrics_do_not_depend_on_the_batch_size():
    pred, gt = _fake_batch(7, seed=1)
    results = []
    for bs in (1, 3, 7):
        acc = MetricAccumulator()
        for s in range(0, 7, bs):
            acc.update(torch.from_numpy(pred[s:s + bs]), torch.from_numpy(gt[s:s + bs]))
        results.append(acc.compute())
    for k in METRIC_KEYS:
        assert results[0][k] == pytest.approx(results[1][k], rel=1e-12)
        assert results[0][k] == pytest.approx(results[2][k], rel=1e-12)
    # the mean over images, not over pixels nor the last batch only
    per = [compute_metrics(torch.from_numpy(pred[i:i + 1]), torch.from_numpy(gt[i:i + 1]))["rmse"] for i in range(7)]
    assert results[1]["rmse"] == pytest.approx(np.mean(per), rel=1e-12)


# -- trainer --------------------------------------------------------------------------------------

def _meta(prepared, arch="fcrn_tiny"):
    from edgeticket.train.run import run_meta

    return run_meta(arch, prepared)


def test_masked_weights_stay_exactly_zero_through_momentum_and_weight_decay(prepared, tmp_path):
    torch.manual_seed(0)
    model = build_model("fcrn_tiny")
    names = prunable_names(model)
    mask = Mask.ones(model, names)
    g = torch.Generator().manual_seed(0)
    for k in names:
        mask[k] = torch.rand(mask[k].shape, generator=g) > 0.5
    cfg = tiny_train_config(epochs=2, weight_decay=0.05, momentum=0.9)
    Trainer(model, prepared, cfg, tmp_path / "run", meta=_meta(prepared), mask=mask, progress=False).fit()
    params = dict(model.named_parameters())
    for k in names:
        assert (params[k][~mask[k]] == 0).all(), k
        assert (params[k][mask[k]] != 0).any(), k
    saved = torch.load(tmp_path / "run" / paths.MODEL, weights_only=True)
    for k in names:
        assert (saved[k][~mask[k]] == 0).all()


def test_resume_ends_with_the_same_weights(prepared, tmp_path):
    cfg = tiny_train_config(epochs=3)
    torch.manual_seed(0)
    ref = build_model("fcrn_tiny")
    Trainer(ref, prepared, cfg, tmp_path / "a", meta=_meta(prepared), progress=False).fit()

    def kill(epoch, row):
        if epoch == 1:  # dies in epoch 1, before its checkpoint: last.pt holds epoch 0's
            raise RuntimeError("killed")

    torch.manual_seed(0)
    t = Trainer(build_model("fcrn_tiny"), prepared, cfg, tmp_path / "b", meta=_meta(prepared), progress=False,
                on_epoch=kill)
    with pytest.raises(RuntimeError, match="killed"):
        t.fit()
    assert torch.load(tmp_path / "b" / paths.LAST, weights_only=True)["epoch"] == 1
    torch.manual_seed(7)  # a different fresh model: everything must come from the checkpoint
    model = build_model("fcrn_tiny")
    Trainer(model, prepared, cfg, tmp_path / "b", meta=_meta(prepared), progress=False).fit(resume=True)
    for (k, va), vb in zip(ref.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    log = [json.loads(x) for x in (tmp_path / "b" / paths.LOG).read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    ma = json.loads((tmp_path / "a" / paths.METRICS).read_text())
    mb = json.loads((tmp_path / "b" / paths.METRICS).read_text())
    assert ma == mb


def test_resume_with_nothing_saved_starts_from_the_beginning(prepared, tmp_path):
    torch.manual_seed(0)
    ref = build_model("fcrn_tiny")
    Trainer(ref, prepared, tiny_train_config(epochs=1), tmp_path / "a", meta=_meta(prepared), progress=False).fit()
    torch.manual_seed(0)
    model = build_model("fcrn_tiny")
    Trainer(model, prepared, tiny_train_config(epochs=1), tmp_path / "b", meta=_meta(prepared), progress=False).fit(resume=True)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values(), strict=True))


def test_resume_from_a_mid_epoch_interrupt(prepared, tmp_path, monkeypatch):
    """SIGTERM mid-epoch saves a checkpoint; resuming ends where an uninterrupted run ends."""
    import signal

    from edgeticket.errors import Interrupted

    cfg = tiny_train_config(epochs=2, batch_size=2)
    torch.manual_seed(0)
    ref = build_model("fcrn_tiny")
    Trainer(ref, prepared, cfg, tmp_path / "ref", meta=_meta(prepared), progress=False).fit()

    torch.manual_seed(0)
    model = build_model("fcrn_tiny")
    t = Trainer(model, prepared, cfg, tmp_path / "cut", meta=_meta(prepared), progress=False)
    calls = {"n": 0}
    orig = t._mask_grads

    def after_backward():
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGTERM)
        orig()

    monkeypatch.setattr(t, "_mask_grads", after_backward)
    with pytest.raises(Interrupted, match="--resume"):
        t.fit()
    state = torch.load(tmp_path / "cut" / paths.LAST, weights_only=True)
    assert state["epoch"] == 0 and state["step_in_epoch"] == 3
    torch.manual_seed(99)
    model2 = build_model("fcrn_tiny")
    Trainer(model2, prepared, cfg, tmp_path / "cut", meta=_meta(prepared), progress=False).fit(resume=True)
    for (k, va), vb in zip(ref.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_divergence_guard_names_the_step_and_keeps_the_checkpoint(prepared, tmp_path):
    cfg = tiny_train_config(epochs=3, guard_every=50)
    torch.manual_seed(0)
    model = build_model("fcrn_tiny")
    t = Trainer(model, prepared, cfg, tmp_path / "run", meta=_meta(prepared), progress=False)
    real_loss = t.loss_fn
    calls = {"n": 0}
    steps_per_epoch = len(prepared.load("train")) // cfg.batch_size

    def poisoned(pred, target):
        calls["n"] += 1
        loss = real_loss(pred, target)
        return loss * float("nan") if calls["n"] == steps_per_epoch + 2 else loss

    t.loss_fn = poisoned
    with pytest.raises(DivergenceError) as e:
        t.fit()
    msg = str(e.value)
    assert "epoch 2, step 2" in msg and "NaN" in msg and "--lr" in msg
    last = torch.load(tmp_path / "run" / paths.LAST, weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_finetune_beats_the_mean_depth_baseline(synth_dir, tmp_path):
    cfg = tiny_train_config(epochs=12, batch_size=4, lr=0.02)
    res = finetune(synth_dir, tmp_path / "ft", tiny_finetune_config(cfg, input_size=(48, 64), val_fraction=0.15), progress=False)
    from edgeticket.data.config import DataConfig
    from edgeticket.data.dataset import PreparedData
    from edgeticket.data.prepare import resolve_data

    base = mean_depth_baseline(PreparedData(resolve_data(synth_dir, DataConfig(input_size=(48, 64), val_fraction=0.15))),
                               "val")
    assert res.val["rmse"] < base["rmse"], (res.val, base)
    metrics = json.loads((tmp_path / "ft" / paths.METRICS).read_text())
    assert set(METRIC_KEYS) <= set(metrics["val"]) and set(METRIC_KEYS) <= set(metrics["test"])
    meta = json.loads((tmp_path / "ft" / paths.META).read_text())
    assert meta["arch"] == "fcrn_tiny" and meta["input_size"] == [48, 64] and meta["data"]["source_sha256"]
    assert math.isfinite(metrics["test"]["rmse"])


def test_nonempty_out_is_refused_without_resume_or_overwrite(cache, tmp_path):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(UserError, match="no edgeticket command wrote"):
        finetune(cache, out, tiny_finetune_config(tiny_train_config(epochs=1)), progress=False)
    with pytest.raises(UserError, match="no edgeticket command wrote"):  # --overwrite never clears foreign files
        finetune(cache, out, tiny_finetune_config(tiny_train_config(epochs=1)), overwrite=True, progress=False)
    assert (out / "something").read_text() == "x"


def test_mask_that_does_not_fit_lists_mismatches(cache, tmp_path):
    model = build_model("fcrn_resnet18")
    mask = Mask.ones(model, prunable_names(model))
    with pytest.raises(UserError, match="does not fit this model") as e:
        finetune(cache, tmp_path / "ft", tiny_finetune_config(tiny_train_config(epochs=1)), mask=mask, progress=False)
    assert "has shape" in str(e.value)


def test_resume_with_other_settings_is_refused_but_a_lower_lr_is_allowed(cache, tmp_path):
    finetune(cache, tmp_path / "ft", tiny_finetune_config(tiny_train_config(epochs=2)), progress=False)
    with pytest.raises(UserError, match=r"other settings \(train\.batch_size\)"):
        finetune(cache, tmp_path / "ft", tiny_finetune_config(tiny_train_config(epochs=2, batch_size=2)), resume=True, progress=False)
    finetune(cache, tmp_path / "ft", tiny_finetune_config(tiny_train_config(epochs=2, lr=0.001)), resume=True, progress=False)


def test_resume_with_another_arch_is_refused(cache, tmp_path):
    finetune(cache, tmp_path / "ft", tiny_finetune_config(tiny_train_config(epochs=1)), progress=False)
    with pytest.raises(UserError, match=r"other settings \(model\.arch\)"):
        finetune(cache, tmp_path / "ft", tiny_finetune_config(tiny_train_config(epochs=1), arch="fcrn_resnet18"), resume=True, progress=False)


def _conv_weights(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if k.endswith(".weight") and v.dim() == 4}


def test_finetune_starts_from_a_weights_file_and_records_the_start(cache, tmp_path):
    from edgeticket.fsio import sha256_file

    torch.manual_seed(5)
    start = build_model("fcrn_tiny").state_dict()
    torch.save(start, tmp_path / "start.pt")
    still = tiny_finetune_config(tiny_train_config(epochs=1, optimizer="adamw", lr=1e-9, weight_decay=0.0))
    finetune(cache, tmp_path / "ft", still, init_from=tmp_path / "start.pt", progress=False)
    final = torch.load(tmp_path / "ft" / paths.FINAL, weights_only=True)
    torch.manual_seed(still.train.seed)
    default = build_model("fcrn_tiny").state_dict()  # where it would have started without init_from
    for k, w in _conv_weights(start).items():
        assert torch.allclose(final[k], w, atol=1e-6), k  # an lr of 1e-9 barely moves them
        assert not torch.allclose(default[k], w, atol=1e-3), k
    meta = json.loads((tmp_path / "ft" / paths.META).read_text())
    assert meta["start"] == {"weights": str((tmp_path / "start.pt").resolve()),
                             "sha256": sha256_file(tmp_path / "start.pt"), "step": 0}
    assert meta["data"]["val_carve"] == "scene"  # the synthetic rooms are carved by room
    metrics = json.loads((tmp_path / "ft" / paths.METRICS).read_text())
    assert metrics["val"]["nonfinite"] == 0 == metrics["test"]["nonfinite"]
    # a model directory works too (its model.pt), and a bad start is refused before anything is written
    finetune(cache, tmp_path / "ft2", still, init_from=tmp_path / "ft", progress=False)
    assert json.loads((tmp_path / "ft2" / paths.META).read_text())["start"]["weights"].endswith("ft/model.pt")
    with pytest.raises(UserError, match="--init-from .*nope.pt: no such weights file"):
        finetune(cache, tmp_path / "ft3", still, init_from=tmp_path / "nope.pt", progress=False)
    with pytest.raises(UserError, match="--start-step 99: this run has"):
        finetune(cache, tmp_path / "ft", still, init_from=tmp_path / "start.pt", start_step=99, overwrite=True,
                 progress=False)
    assert not (tmp_path / "ft3").exists() and (tmp_path / "ft" / paths.FINAL).exists()


def test_start_step_continues_the_schedule_of_a_run_from_step_0(cache, tmp_path):
    from edgeticket.data.dataset import PreparedData
    from edgeticket.train.optim import batch_plan

    cfg = tiny_finetune_config(tiny_train_config(epochs=2, warmup_epochs=0.5))
    torch.manual_seed(1)
    torch.save(build_model("fcrn_tiny").state_dict(), tmp_path / "w.pt")
    spe = batch_plan(PreparedData(cache).count("train"), cfg.train)[1]
    finetune(cache, tmp_path / "full", cfg, init_from=tmp_path / "w.pt", progress=False)
    finetune(cache, tmp_path / "late", cfg, init_from=tmp_path / "w.pt", start_step=spe, progress=False)
    full, late = ([json.loads(x) for x in (tmp_path / d / paths.LOG).read_text().splitlines()] for d in ("full", "late"))
    assert [r["epoch"] for r in full] == [0, 1] and [r["epoch"] for r in late] == [1]
    assert late[0]["lr"] == pytest.approx(full[1]["lr"], rel=1e-12)  # the same schedule, advanced to the step
    assert json.loads((tmp_path / "late" / paths.META).read_text())["start"]["step"] == spe


# -- data parallel ------------------------------------------------------------------------------

def _ddp_worker(rank: int, root: str, cache: str) -> None:
    import torch.distributed as dist

    from edgeticket.data.dataset import PreparedData
    from edgeticket.train.run import run_meta

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2)
    try:
        data = PreparedData(cache)
        torch.manual_seed(rank)  # different on purpose: DDP must start every rank from rank 0's weights
        model = build_model("fcrn_tiny")
        names = prunable_names(model)
        mask = Mask.ones(model, names)
        mask[names[3]] = torch.rand(mask[names[3]].shape, generator=torch.Generator().manual_seed(0)) > 0.5
        cfg = tiny_train_config(epochs=2, batch_size=2)
        Trainer(model, data, cfg, f"{root}/run", meta=run_meta("fcrn_tiny", data), mask=mask, progress=False).fit()
        torch.save(model.state_dict(), f"{root}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_state(cache, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path), str(cache)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    metrics = json.loads((tmp_path / "run" / paths.METRICS).read_text())
    from edgeticket.data.dataset import PreparedData

    assert metrics["test"]["n_images"] == PreparedData(cache).count("test")  # every frame once, no pads


def test_the_training_memory_estimate_counts_saved_tensors_and_leaves_the_model_as_it_was():
    from edgeticket.train.memory import saved_bytes_per_image

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    m[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    n = saved_bytes_per_image(m, (8, 8), torch.device("cpu"), None)
    # independent: the conv saves its input (3x8x8), BN its input (8x8x8) and its two per-channel
    # statistics (8 each), ReLU its output (8x8x8); weights are parameters and do not count
    assert n == 4 * (3 * 64 + 8 * 64 + 2 * 8 + 8 * 64)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # BN statistics put back
    assert torch.equal(rng, torch.get_rng_state())  # no random numbers drawn: training stays bit-identical


def test_a_batch_the_machine_cannot_hold_is_refused_before_training(cache, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgeticket.cli.app import app
    from edgeticket.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)  # 1 MiB free
    out = tmp_path / "ft"
    res = CliRunner().invoke(app, ["finetune", "--data", str(cache), "--arch", "fcrn_tiny", "--pretrained", "none",
                                   "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("edgeticket: error: --batch-size 4: a training step at 48x64")
    assert "GiB is free; pass a smaller --batch-size" in line and not (out / "last.pt").exists()
