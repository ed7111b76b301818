"""Latency-budgeted channel searches: the latency table, the allocation, the stop and the refusals.

Most tests replace ONNX Runtime's timing with a cost model that is exact for the table (a
conv costs its MACs), so the allocation and the stopping rule are checked against an
independent computation without noise. The last test measures for real.
"""

from __future__ import annotations

import math

import fake_latency
import pytest
import torch
from fake_latency import NS_PER_MAC
from helpers import SIZE, tiny_search_config, tiny_train_config
from typer.testing import CliRunner

from edgeticket.bench.latency_model import (
    CALIBRATION_DENSITY,
    ConvShape,
    LatencyModel,
    Timing,
    conv_shapes,
    interp_conv,
)
from edgeticket.cli.app import app
from edgeticket.models.adapt import adapt_widths, layer_widths
from edgeticket.models.macs import count_macs
from edgeticket.models.registry import build_model, list_models
from edgeticket.tickets.budget import LatencyBudget, prune_to_latency, prune_uniform_to_latency
from edgeticket.tickets.criteria.channel import prune_channels
from edgeticket.tickets.criteria.common import (
    channel_alive,
    channel_scores,
    prunable_names,
    round_channels,
    set_channels,
    with_bn_entries,
)
from edgeticket.tickets.groups import build_graph, channel_groups, prunable_groups
from edgeticket.tickets.imp import alive_widths, latency_model_for
from edgeticket.tickets.mask import Mask


@pytest.fixture
def fake_timing(monkeypatch, tmp_path):
    """ORT timing replaced by MACs: a conv's table entry is exactly its MACs; a model's time its conv MACs + 1 ms."""
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    fake_latency.install(monkeypatch.setattr)


def _tiny():
    m = build_model("fcrn_tiny")
    scope = prunable_names(m)
    groups = prunable_groups(channel_groups(m, build_graph(m)), set(scope))
    return m, groups, with_bn_entries(Mask.ones(m, scope), groups)


def _budget(m, groups, init, in_graph: bool = False) -> LatencyBudget:
    lm = latency_model_for(m, groups, init, tuple(SIZE), Timing(threads=1), arch="fcrn_tiny", in_graph=in_graph)
    return LatencyBudget(lm, lambda mask: alive_widths(m, mask, groups))


def test_interpolation_is_bilinear_and_exact_on_grid():
    s = ConvShape(64, 32, (3, 3), (1, 1), (1, 1), (1, 1), False, (12, 16))
    ins, outs = s.grid()
    entry = {"in": ins, "out": outs, "ms": [[float(ci * co) for co in outs] for ci in ins]}
    for ci in ins:
        for co in outs:
            assert interp_conv(entry, ci, co, False) == pytest.approx(ci * co)
    # cost = cin * cout is bilinear, so it is exact between grid points too, and scales to zero below the grid
    assert interp_conv(entry, 40, 20, False) == pytest.approx(800)
    assert interp_conv(entry, 4, 2, False) == pytest.approx(8)


def test_prediction_equals_an_independent_mac_count(fake_timing):
    m, groups, init = _tiny()
    budget = _budget(m, groups, init)
    assert budget.model.b == pytest.approx(1.0) and budget.model.a == pytest.approx(1.0)
    for density in (1.0, 0.6, 0.3):
        mask = prune_channels(m.state_dict(), init, groups, density, 8).mask
        alive = alive_widths(m, mask, groups)
        _, per = count_macs(m, tuple(SIZE), alive, by_layer=True)
        conv_macs = sum(v for k, v in per.items() if isinstance(m.get_submodule(k), torch.nn.Conv2d))
        assert budget.predict(mask) == pytest.approx(1.0 + conv_macs * NS_PER_MAC, rel=1e-6)


def test_allocation_takes_the_cheapest_block_per_millisecond_first(fake_timing):
    m, groups, init = _tiny()
    budget = _budget(m, groups, init)
    weights = {k: torch.ones_like(v) for k, v in m.state_dict().items()}  # every channel equally important
    dense = budget.predict(init)
    # independent: the saving of removing 8 channels of each group alone
    savings = {g.index: dense - budget.predict(trial) for g, trial in _one_block_masks(init, groups)}
    best = max(savings, key=savings.get)
    budget.target_ms = dense - 1e-9  # one block is enough
    res = prune_to_latency(weights, init, groups, budget, 8)
    lost = {g.index: g.channels - int(channel_alive(res.mask, g).sum()) for g in groups}
    assert [i for i, n in lost.items() if n] == [best] and lost[best] == 8


def _predicted_by_macs(m, counts: dict[int, int], groups) -> float:
    """The fake machine's latency of the model whose groups keep ``counts`` channels (independent of the table)."""
    alive = {k: list(v) for k, v in layer_widths(m).items()}
    for g in groups:
        for p in g.producers + g.bns:
            alive[p][1] = counts[g.index]
            if p in g.bns:
                alive[p][0] = counts[g.index]
        for c in g.consumers:
            alive[c][0] = counts[g.index]
    _, per = count_macs(m, tuple(SIZE), {k: tuple(v) for k, v in alive.items()}, by_layer=True)
    return 1.0 + sum(v for k, v in per.items() if isinstance(m.get_submodule(k), torch.nn.Conv2d)) * NS_PER_MAC


@pytest.mark.parametrize("arch", ["fcrn_tiny", "fastdepth_mobilenet_v2"])
def test_conv_shape_macs_equal_the_mac_counter_at_any_width(arch):
    m = build_model(arch)
    shapes = conv_shapes(m, tuple(SIZE))
    _, dense = count_macs(m, tuple(SIZE), by_layer=True)
    narrow = {k: (max(1, s.cin // 3), max(1, s.cout // 3)) if not s.depthwise else (s.cin // 3, s.cin // 3)
              for k, s in shapes.items()}
    _, per = count_macs(m, tuple(SIZE), narrow, by_layer=True)
    for k, s in shapes.items():
        assert s.macs(s.cin, s.cout) == dense[k], k
        assert s.macs(*narrow[k]) == per[k], k


def test_macs_allocation_on_a_machine_where_time_is_macs_ranks_by_importance_alone(fake_timing):
    """On the fake machine a millisecond is a million MACs everywhere, so a block's MACs per millisecond
    saved are the same in every group and the ``macs`` allocation gives up the block of lowest mean
    normalised L1 score first, whatever its time; the ``latency`` allocation, the block of most ms per unit."""
    m, groups, init = _tiny()
    budget = _budget(m, groups, init)
    torch.manual_seed(0)
    weights = {k: torch.rand_like(v) + 0.1 if v.is_floating_point() else v for k, v in m.state_dict().items()}
    mean_low = {}
    for g in groups:  # independent: the mean normalised L1 of each group's lowest 8 channels
        if g.channels <= 8:
            continue
        s = channel_scores(weights, init, g).double()
        mean_low[g.index] = float(torch.sort(s / s.mean()).values[:8].mean())
    budget.target_ms = budget.predict(init) - 1e-9  # one block is enough
    res = prune_to_latency(weights, init, groups, budget, 8, by_macs=True)
    lost = [g.index for g in groups if int(channel_alive(res.mask, g).sum()) < g.channels]
    assert lost == [min(mean_low, key=mean_low.get)]
    by_time = prune_to_latency(weights, init, groups, budget, 8)
    assert [g.index for g in groups if int(channel_alive(by_time.mask, g).sum()) < g.channels] != lost


def test_uniform_allocation_keeps_the_widest_shared_fraction_that_meets_the_target(fake_timing):
    m, groups, init = _tiny()
    budget = _budget(m, groups, init)
    torch.manual_seed(0)
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in m.state_dict().items()}
    budget.target_ms = 0.5 * budget.predict(init)
    res = prune_uniform_to_latency(weights, init, groups, budget, 8)
    got = {g.index: int(channel_alive(res.mask, g).sum()) for g in groups}
    # independent: scan the shared fraction on a grid finer than any width step, widest first
    expect = None
    for i in range(2000, -1, -1):
        counts = {g.index: round_channels(g.channels * i / 2000, 8, g.channels) for g in groups}
        if _predicted_by_macs(m, counts, groups) <= budget.target_ms:
            expect = counts
            break
    assert got == expect
    assert budget.predict(res.mask) <= budget.target_ms
    for g in groups:  # each group keeps its best channels by L1
        scores = channel_scores(weights, init, g)
        kept = channel_alive(res.mask, g)
        if 0 < int(kept.sum()) < g.channels:
            assert float(scores[kept].min()) >= float(scores[~kept].max()), g.name


@pytest.mark.parametrize(("criterion", "allocation"), [("channel", "latency"), ("refill", "latency"),
                                                       ("channel", "uniform"), ("channel", "macs")])
def test_budgeted_search_meets_each_level_target_and_stops(fake_timing, cache, tmp_path, criterion, allocation):
    from edgeticket.fsio import read_json
    from edgeticket.tickets.imp import search

    cfg = tiny_search_config(criterion=criterion, levels=8, rate=0.3, target_speedup=2.0, allocation=allocation,
                             train=tiny_train_config(epochs=1))
    out = tmp_path / "s"
    summary = search(cache, out, cfg, device="cpu", progress=False)
    levels = sorted(out.glob("level_*"))
    reps = [read_json(d / "sparsity.json") for d in levels]
    dense = reps[0]["predicted_latency_ms"]
    final = dense / 2.0
    for prev, cur in zip(reps, reps[1:], strict=False):
        assert cur["predicted_latency_ms"] <= max(final, 0.7 * prev["predicted_latency_ms"]) + 1e-9
    assert reps[-1]["predicted_latency_ms"] <= final + 1e-9
    assert all(r["predicted_latency_ms"] > final for r in reps[:-1])  # it stopped at the first level that met it
    assert len(levels) < 8
    assert {r["allocation"] for r in reps} == {allocation}
    assert summary["target"]["reached"] and summary["target"]["level"] == len(levels) - 1
    assert "reached at level" in (out / "summary.md").read_text()
    for d in levels[1:]:  # whole channels: every producer filter is all kept or all pruned
        mask = Mask.load(d / "mask.pt")
        for name, t in mask.items():
            if t.dim() == 4:
                per = t.flatten(1)
                assert bool(((per.all(1)) | (~per.any(1))).all()), name


def test_unreachable_and_misplaced_targets_exit_2_before_writing(fake_timing, cache, tmp_path):
    r = CliRunner()
    base = ["search", "--data", str(cache), "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", "1",
            "--batch-size", "4", "--device", "cpu", "--quiet"]
    out = tmp_path / "a"
    res = r.invoke(app, base + ["--out", str(out), "--criterion", "channel", "--target-speedup", "1000"])
    assert res.exit_code == 2, res.output
    assert "--target-speedup 1000" in res.output and "speed-up of" in res.output and "Traceback" not in res.output
    assert not out.exists()
    res = r.invoke(app, base + ["--out", str(out), "--criterion", "magnitude-global", "--target-speedup", "2"])
    assert res.exit_code == 2 and "channel" in res.output and not out.exists()
    res = r.invoke(app, base + ["--out", str(out), "--criterion", "channel", "--target-speedup", "2",
                                "--target-latency", "3"])
    assert res.exit_code == 2 and "not both" in res.output
    res = r.invoke(app, base + ["--out", str(out), "--criterion", "channel", "--allocation", "uniform"])
    assert res.exit_code == 2 and "--allocation" in res.output and "--target-speedup" in res.output, res.output
    assert not out.exists()


def test_table_is_cached_with_provenance(fake_timing, tmp_path):
    m, groups, init = _tiny()
    b1 = _budget(m, groups, init)
    assert b1.model.provenance["measured_now"]
    b2 = _budget(m, groups, init)
    assert not b2.model.provenance["measured_now"] and b2.model.table == b1.model.table
    prov = b2.model.provenance
    assert {"cpu", "onnxruntime", "threads", "provider", "opt_level"} <= prov.keys()
    assert str(tmp_path / "cache") in prov["cache"]


def test_latency_model_shapes_cover_every_conv():
    m = build_model("fcrn_tiny")
    shapes = conv_shapes(m, tuple(SIZE))
    assert set(shapes) == {n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    assert isinstance(LatencyModel, type)


@pytest.mark.slow
def test_target_speedup_2_export_is_measured_faster_and_shows_its_prediction(synth_dir, tmp_path, monkeypatch):
    """The issue's acceptance run, fcrn_resnet18 at 96x128, measured for real by the bench: the search stops
    at the level whose latency check measured it at the target, its export carries the prediction, the
    bench prints it, and the ticket is measured clearly faster than the dense export.

    The issue's figure (>= 1.8x) depends on the machine, so it is a benchmark
    (``benchmarks/target_speedup_acceptance.py``), not this test: on the Xeon of BENCHMARKS.md it measured
    1.97x and 1.95x; on a 2-core AMD EPYC, less (BENCHMARKS.md). Here the ticket must be faster beyond
    noise (interval above 1) and by at least 1.3x. One thread: with two, that machine's narrowest R18 at
    96x128 ran 7.5 ms against 13.5 ms dense (thread sync on tiny convs), so 2x was refused as unreachable."""
    from edgeticket.data.config import DataConfig
    from edgeticket.data.prepare import prepare
    from edgeticket.fsio import read_json

    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "latency"))
    data = prepare(synth_dir, tmp_path / "c96", DataConfig(input_size=(96, 128), val_fraction=0.15), progress=False)
    r = CliRunner()
    out = tmp_path / "s"
    res = r.invoke(app, ["search", "--data", str(data), "--out", str(out), "--arch", "fcrn_resnet18",
                         "--pretrained", "none", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                         "--criterion", "channel", "--rate", "0.3", "--levels", "5", "--target-speedup", "2",
                         "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "reached at level" in res.output
    last = sorted(out.glob("level_*"))[-1]
    for src, name in ((out / "level_00", "dense"), (last, "ticket")):
        res = r.invoke(app, ["export", str(src), "--out", str(tmp_path / name), "--quiet"])
        assert res.exit_code == 0, res.output
    res = r.invoke(app, ["bench", str(tmp_path / "ticket" / "model.onnx"), "--baseline",
                         str(tmp_path / "dense" / "model.onnx"), "--data", str(synth_dir), "--out",
                         str(tmp_path / "b"), "--limit", "2", "--runs", "30", "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    report = read_json(tmp_path / "b" / "report.json")
    ticket = next(e for e in report["models"] if not e["baseline"])
    assert ticket["predicted_latency_ms"] == pytest.approx(read_json(last / "sparsity.json")["predicted_latency_ms"],
                                                           rel=1e-5)
    assert "predicted" in res.output and (tmp_path / "b" / "predicted_vs_measured_latency.png").exists()
    print(f"measured speed-up {ticket['vs_baseline']['speedup']:.3f} {ticket['vs_baseline']['speedup_ci']}, predicted "
          f"{read_json(last / 'sparsity.json')['predicted_speedup']:.3f}")
    v = ticket["vs_baseline"]
    assert v["speedup_ci"][0] > 1.0 and v["speedup"] >= 1.3, v
    chk = read_json(last / "sparsity.json")["latency_check"]  # the search timed its last level itself
    assert chk["attempts"] and chk["measured_speedup"] >= 1.8, chk
    assert chk["met"] == (chk["measured_speedup"] >= 2.0 - 1e-9)


@pytest.mark.parametrize("arch", [a for a in list_models() if a != "fcrn_resnet34"])  # 34 = 18's blocks
def test_allocation_meets_a_target_on_every_architecture(fake_timing, arch):
    m = build_model(arch)
    scope = prunable_names(m)
    groups = prunable_groups(channel_groups(m, build_graph(m)), set(scope))
    init = with_bn_entries(Mask.ones(m, scope), groups)
    lm = latency_model_for(m, groups, init, tuple(SIZE), Timing(threads=1), arch=arch, in_graph=True)
    budget = LatencyBudget(lm, lambda mask: alive_widths(m, mask, groups))
    budget.target_ms = 0.6 * budget.predict(init)
    # the fake machine costs a model its conv MACs + 1 ms, as the table does: the fit is exact, every factor 1
    assert max(abs(e) for e in lm.provenance["fit"]["fit_error"]) < 1e-6
    assert all(abs(c - 1.0) < 1e-6 for c in lm.factors.values()) and len(lm.factors) == len(groups)
    res = prune_to_latency(m.state_dict(), init, groups, budget, 8)
    assert budget.predict(res.mask) <= budget.target_ms
    for g in groups:
        n = int(channel_alive(res.mask, g).sum())
        assert n == g.channels or n % 8 == 0 and n >= min(8, g.channels), (g.name, n)
    wd = alive_widths(m, res.mask, groups)  # widths a model can be built at (the calibration exports them)
    adapt_widths(build_model(arch), {k: list(v) for k, v in wd.items()})


@pytest.mark.slow
def test_torchrun_rank_0_measures_the_table_and_every_rank_searches_with_it(fake_timing, cache, tmp_path,
                                                                             monkeypatch):
    """Two CPU processes (gloo): rank 0 times the table, rank 1 times nothing and receives the same model;
    both stop at the same level (a rank that stopped elsewhere would hang the other), the target met."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from edgeticket import paths

    lat = tmp_path / "lat"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGETICKET_CACHE": str(lat)}
    rec = tmp_path / "rec"
    rec.mkdir()
    out = tmp_path / "s"
    args = ["search", "--data", str(cache), "--arch", "fcrn_tiny", "--pretrained", "none", "--levels", "8",
            "--epochs", "1", "--criterion", "channel", "--rate", "0.3", "--target-speedup", "2", "--batch-size", "4",
            "--optimizer", "adamw", "--lr", "0.001", "--decoder-lr-mult", "1", "--device", "cpu", "--quiet",
            "--out", str(out)]
    torchrun = Path(sys.executable).parent / "torchrun"
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(Path(__file__).parent / "ranked_search.py"),
                        str(rec), *args], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads((rec / f"rank{k}.json").read_text()) for k in (0, 1))
    assert r0["timed"] > 0 and r1["timed"] == 0
    assert r1 == {**r0, "timed": 0}  # the same table, fit and dense latency on both ranks
    levels = sorted(out.glob("level_*"))
    reps = [json.loads((d / paths.SPARSITY).read_text()) for d in levels]
    final = reps[0]["predicted_latency_ms"] / 2
    assert reps[-1]["predicted_latency_ms"] <= final + 1e-9 < min(x["predicted_latency_ms"] for x in reps[:-1])
    assert json.loads((out / paths.SUMMARY_JSON).read_text())["target"]["reached"]
    # the figures rank 0 wrote come from the broadcast table: the cached table predicts them again
    monkeypatch.setenv("EDGETICKET_CACHE", str(lat))
    m, groups, init = _tiny()
    h, w = json.loads((out / paths.SEARCH).read_text())["config"]["data"]["input_size"]
    lm = latency_model_for(m, groups, init, (h, w), Timing(), arch="fcrn_tiny")  # the search's cache key
    assert not lm.provenance["measured_now"]
    budget = LatencyBudget(lm, lambda mask: alive_widths(m, mask, groups))
    for d, rep in zip(levels, reps, strict=True):
        assert budget.predict(Mask.load(d / paths.MASK)) == pytest.approx(rep["predicted_latency_ms"], rel=1e-9)


def _one_block_masks(init, groups):
    """``(group, mask)`` for each group of more than 8 channels: ``init`` with that group alone less its last 8."""
    for g in groups:
        if g.channels <= 8:
            continue
        trial = Mask(init)
        keep = torch.ones(g.channels, dtype=torch.bool)
        keep[g.channels - 8:] = False
        set_channels(trial, g, keep)
        yield g, trial


def _one_block_savings(m, groups, in_graph=None) -> dict[str, float]:
    """The fake machine's saving when one group alone loses its last 8 channels (independent of the table)."""
    init = with_bn_entries(Mask.ones(m, prunable_names(m)), groups)
    dense = fake_latency.model_ms(m, tuple(SIZE), {}, in_graph)
    return {g.name: dense - fake_latency.model_ms(m, tuple(SIZE), alive_widths(m, trial, groups), in_graph)
            for g, trial in _one_block_masks(init, groups)}


def test_in_graph_factors_are_measured_per_group_and_steer_the_allocation(monkeypatch, tmp_path):
    """A machine on which the group the table calls cheapest to cut saves only 0.3x its MACs inside the model,
    and another 1.8x: the probes recover both factors, the prediction of tickets narrowing every group at once
    matches the machine, and the allocation follows the machine's savings, not the table's."""
    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    m, groups, init = _tiny()
    by_table = _one_block_savings(m, groups)
    first, *rest = sorted(by_table, key=by_table.get, reverse=True)
    planted = {first: 0.3, rest[-1]: 1.8}
    fake_latency.install(monkeypatch.setattr, in_graph=planted)
    budget = _budget(m, groups, init, in_graph=True)
    lm = budget.model
    # the fit trades a little between a, b, p and the factors (a factor's prior pulls it towards 1): what
    # must hold is the prediction, below; the factors are the machine's to within 0.02
    for g in groups:
        assert lm.factor(g.name) == pytest.approx(planted.get(g.name, 1.0), abs=0.02), g.name
    assert (lm.a, lm.b, lm.p) == pytest.approx((1.0, 1.0, 1.0), rel=0.05)
    assert max(abs(e) for e in lm.provenance["fit"]["fit_error"]) < 1e-3
    assert max(abs(e) for e in lm.provenance["fit"]["probe_error"].values()) < 1e-3
    assert set(lm.provenance["fit"]["probes"]) == {g.name for g in groups}
    torch.manual_seed(0)
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in m.state_dict().items()}
    for density in (0.6, 0.25):
        mask = prune_channels(weights, init, groups, density, 8).mask
        assert budget.predict(mask) == pytest.approx(
            fake_latency.model_ms(m, tuple(SIZE), alive_widths(m, mask, groups), planted), rel=5e-3)

    saved = _one_block_savings(m, groups, planted)
    assert max(saved, key=saved.get) != first  # the planted factor changes the choice
    budget.target_ms = budget.predict(init) - 1e-9  # one block is enough
    ones = {k: torch.ones_like(v) for k, v in m.state_dict().items()}  # every channel equally important
    res = prune_to_latency(ones, init, groups, budget, 8)
    lost = [g.name for g in groups if int(channel_alive(res.mask, g).sum()) < g.channels]
    assert lost == [max(saved, key=saved.get)]


def test_a_probe_inside_its_noise_leaves_its_factor_near_1(monkeypatch, tmp_path):
    """Each measurement counts by its own standard error: the same planted probe, recorded as timed to 0.2%
    and to 20%, moves its factor to the machine's value in the first case and hardly in the second, once the
    calibration points (which see the factor too) are recorded as noisy as well."""
    from edgeticket.bench.latency_model import _fit

    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    m, groups, init = _tiny()
    by_table = _one_block_savings(m, groups)
    planted = max(by_table, key=by_table.get)
    fake_latency.install(monkeypatch.setattr, in_graph={planted: 0.3})
    lm = _budget(m, groups, init, in_graph=True).model
    fit = lm.provenance["fit"]
    clean = lm.factor(planted)
    assert clean == pytest.approx(0.3, abs=0.02)
    calibration = [alive_widths(m, prune_channels(m.state_dict(), init, groups, d, 8).mask, groups)
                   for d in CALIBRATION_DENSITY]
    probes = {g: dict(r) for g, r in fit["probes"].items()}
    probes[planted]["ratio_se"] = 0.2
    _fit(lm, [{}, *calibration], fit["measured_ms"], probes, [0.2] * len(fit["measured_ms"]))
    assert abs(lm.factor(planted) - 1.0) < 0.5 * abs(clean - 1.0)
    assert all(abs(lm.factor(g) - 1.0) < 0.02 for g in probes if g != planted)


@pytest.mark.parametrize("check", [True, False])
def test_latency_check_prunes_again_until_the_machine_meets_the_target(monkeypatch, cache, tmp_path, check):
    """A machine on which the three groups the table says save most save only 0.3x their MACs inside the
    model and the others 1.5x: the calibration through uniform tickets averages the two, so the table alone
    (no probes) overrates the budgeted ticket, which cuts the first three. With the check, the level predicted to
    meet 2x is timed beside the dense model and pruned again until the machine itself (its latency counted
    from MACs, not from the table) runs it at >= 2x; without it, the same search stops short."""
    from edgeticket.fsio import read_json
    from edgeticket.tickets.imp import search

    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    m, groups, _ = _tiny()
    by_table = _one_block_savings(m, groups)
    ranked = sorted(by_table, key=by_table.get, reverse=True)
    planted = {**{g: 0.3 for g in ranked[:3]}, **{g: 1.5 for g in ranked[3:]}}  # uniform tickets see both
    fake_latency.install(monkeypatch.setattr, in_graph=planted)
    cfg = tiny_search_config(criterion="channel", levels=8, rate=0.3, target_speedup=2.0, check_latency=check,
                             train=tiny_train_config(epochs=1))
    out = tmp_path / "s"
    summary = search(cache, out, cfg, device="cpu", progress=False)
    last = sorted(out.glob("level_*"))[-1]
    rep = read_json(last / "sparsity.json")
    widths = alive_widths(m, Mask.load(last / "mask.pt"), groups)
    machine = fake_latency.model_ms(m, tuple(SIZE), {}, planted) / fake_latency.model_ms(m, tuple(SIZE), widths,
                                                                                         planted)
    assert rep["predicted_speedup"] >= 2.0 - 1e-9
    if not check:
        assert machine < 1.95, machine  # the table alone overrates the ticket on this machine
        assert "latency_check" not in rep and not (last / "latency_check.json").exists()
        assert "measured" not in summary["target"]["message"]
        return
    chk = rep["latency_check"]
    assert chk == read_json(last / "latency_check.json")
    assert machine >= 2.0 - 1e-9 and chk["met"] and summary["target"]["reached"]
    assert chk["measured_speedup"] == pytest.approx(machine, rel=1e-6)
    first = chk["attempts"][0]
    assert len(chk["attempts"]) >= 2 and not first["met"] and first["speedup"] < 1.95
    assert rep["predicted_speedup"] > first["predicted_speedup"]  # pruned again to a corrected prediction
    assert any("short of the target; pruned again" in n for n in rep["notes"])
    assert f"measured {machine:.2f}x" in summary["target"]["message"]
    table = (out / "summary.md").read_text()
    assert "measured speed-up (check)" in table and f"| {machine:.2f}x |" in table
    earlier = [read_json(d / "sparsity.json") for d in sorted(out.glob("level_*"))[:-1]]
    assert all("latency_check" not in r for r in earlier)  # levels predicted above the target are not timed


def test_a_noisy_check_moves_the_corrected_target_less_than_a_precise_one():
    """The corrected target pools the attempts' measured / predicted ratios by their noise: a precise 10% miss
    and a noisy 33% one correct by about 10%, not 33% (the 4x search that went to 6.89x by the last one)."""
    from edgeticket.tickets.imp import CHECK_MARGIN, clearly_fast, corrected_target_ms

    precise = {"predicted_latency_ms": 10.0, "measured_latency_ms": 11.0, "se": 0.01, "met": False}
    noisy = {"predicted_latency_ms": 9.5, "measured_latency_ms": 9.5 * 4 / 3, "se": 0.1, "met": False}
    got = corrected_target_ms(10.0, [precise, noisy])
    w1, w2 = 1 / 0.01 ** 2, 1 / 0.1 ** 2
    ratio = math.exp((w1 * math.log(1.1) + w2 * math.log(4 / 3)) / (w1 + w2))
    assert got == pytest.approx(10.0 / ratio * (1 - CHECK_MARGIN), rel=1e-12)
    assert 10.0 / 1.12 * (1 - CHECK_MARGIN) < got < 10.0 / 1.1 * (1 - CHECK_MARGIN)
    assert corrected_target_ms(10.0, [precise]) == pytest.approx(10.0 / 1.1 * (1 - CHECK_MARGIN))
    # a pooled ratio that would not prune past the last attempt still prunes CHECK_MARGIN further
    slight = {"predicted_latency_ms": 8.0, "measured_latency_ms": 10.1, "se": 0.5, "met": False}
    assert corrected_target_ms(10.0, [precise, slight]) <= 8.0 * (1 - CHECK_MARGIN) + 1e-12
    # a level measured 20% faster than predicted and needed gives channels back: towards the target
    fast = {"predicted_latency_ms": 10.0, "measured_latency_ms": 8.0, "se": 0.01, "met": True}
    assert clearly_fast(10.0, fast) and not clearly_fast(10.0, {**fast, "measured_latency_ms": 9.8})
    assert corrected_target_ms(10.0, [fast]) == pytest.approx(10.0 / 0.8 * (1 - CHECK_MARGIN))
    assert corrected_target_ms(10.0, [{**fast, "measured_latency_ms": 9.9}]) == pytest.approx(10 * (1 + CHECK_MARGIN))


def test_latency_check_gives_channels_back_where_the_machine_is_faster_than_predicted(monkeypatch, cache, tmp_path):
    """The opposite machine: the three groups the table says save most save 3x their MACs inside the model,
    the others 0.3x, so the budgeted ticket predicted at 2x runs faster. The check gives channels back
    (a wider mask, predicted below 2x) and keeps the widest attempt that the machine still runs at >= 2x."""
    from edgeticket.fsio import read_json
    from edgeticket.tickets.imp import search

    monkeypatch.setenv("EDGETICKET_CACHE", str(tmp_path / "cache"))
    m, groups, _ = _tiny()
    by_table = _one_block_savings(m, groups)
    ranked = sorted(by_table, key=by_table.get, reverse=True)
    planted = {**{g: 3.0 for g in ranked[:3]}, **{g: 0.3 for g in ranked[3:]}}
    fake_latency.install(monkeypatch.setattr, in_graph=planted)
    cfg = tiny_search_config(criterion="channel", levels=8, rate=0.3, target_speedup=2.0,
                             train=tiny_train_config(epochs=1))
    out = tmp_path / "s"
    summary = search(cache, out, cfg, device="cpu", progress=False)
    levels = sorted(out.glob("level_*"))
    last = levels[-1]
    rep = read_json(last / "sparsity.json")
    chk = rep["latency_check"]
    widths = alive_widths(m, Mask.load(last / "mask.pt"), groups)

    def machine(w):
        return fake_latency.model_ms(m, tuple(SIZE), {}, planted) / fake_latency.model_ms(m, tuple(SIZE), w, planted)

    first = chk["attempts"][0]
    assert first["met"] and first["speedup"] > 2.1 and first["predicted_speedup"] >= 2.0 - 1e-9
    assert machine(widths) >= 2.0 - 1e-9 and chk["met"] and summary["target"]["reached"]
    assert chk["measured_speedup"] == pytest.approx(machine(widths), rel=1e-6)
    assert rep["predicted_speedup"] < first["predicted_speedup"]  # wider than the first attempt
    assert rep["macs"]["channel"] > 0 and chk["kept"] >= 1
    met = [a for a in chk["attempts"] if a["met"]]
    assert chk["measured_speedup"] == min(a["speedup"] for a in met)  # the widest that met it
    assert any("channels given back" in n for n in rep["notes"])
    assert len(levels) == summary["target"]["level"] + 1  # the check's level ends the search
