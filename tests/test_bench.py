"""The ONNX Runtime bench: accuracy, latency, baseline ratios, gates, report, plots, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import SIZE, shared_nyu, tiny_finetune_config, tiny_search_config, tiny_train_config

from edgeticket import paths
from edgeticket.bench import api
from edgeticket.bench.api import failed_gates
from edgeticket.bench.config import BenchConfig
from edgeticket.bench.gates import parse_gates
from edgeticket.bench.plots import pareto_front
from edgeticket.errors import UserError
from edgeticket.export.api import export
from edgeticket.export.config import ExportConfig
from edgeticket.export.fold import fold_batchnorm
from edgeticket.export.onnx_export import export_onnx
from edgeticket.models import build_model
from edgeticket.models.card import ModelCard
from edgeticket.tickets.imp import search
from edgeticket.train.finetune import finetune
from edgeticket.train.metrics import METRIC_KEYS


def bench(models, baseline, data, out, search=None, progress=False, **settings):
    """The bench with its settings given as the TOML and the CLI give them (text parsed by the fields)."""
    return api.bench(models, baseline, data, out, BenchConfig.from_dict(settings), search=search, progress=progress)


@pytest.fixture(scope="module")
def chain(synth_dir, tmp_path_factory):
    """A briefly trained dense fcrn_tiny and a compacted channel ticket, both exported."""
    root = tmp_path_factory.mktemp("chain")
    finetune(synth_dir, root / "dense", tiny_finetune_config(tiny_train_config(epochs=2), input_size=SIZE,
                                                             val_fraction=0.15), progress=False)
    search(synth_dir, root / "search", tiny_search_config(tiny_train_config(epochs=1), input_size=SIZE, val_fraction=0.15,
                                                          levels=3, criterion="channel", round_to=2), progress=False)
    export(root / "dense", root / "e_dense", progress=False)
    export(paths.level_dir(root / "search", 2), root / "e_ticket", ExportConfig(int8=True, calib_images=8), progress=False)
    return root


def test_whole_chain_report_and_plots(chain, synth_dir, tmp_path):
    dense, ticket = chain / "e_dense" / paths.ONNX, chain / "e_ticket" / paths.ONNX
    r = bench([str(ticket), str(chain / "e_ticket" / paths.ONNX_INT8)], str(dense), synth_dir, tmp_path / "b",
              runs=5, warmup=1, batch_size=4, search=chain / "search", progress=False)
    assert [m["path"] for m in r["models"]] == [str(dense), str(ticket), str(chain / "e_ticket" / paths.ONNX_INT8)]
    base, t = r["models"][0], r["models"][1]
    assert base["baseline"] and not t["baseline"]
    for m in r["models"]:
        assert {*METRIC_KEYS, "nonfinite"} == set(m["metrics"]) and set(m["latency_ms"]) == {"p50", "p90", "mean", "min"}
        assert m["metrics"]["nonfinite"] == 0
        assert m["latency_ms"]["min"] <= m["latency_ms"]["p50"] <= m["latency_ms"]["p90"]
        assert m["size"]["bytes"] > 0 and m["size"]["macs"] > 0 and m["vs_baseline"]["metrics_delta"]
        assert set(m["throughput_img_s"]) == {"batch1", "batch4"}
    # level 2 keeps 0.8^2 of the prunable weights as compaction counts them (it kept ~0.41 when the rate
    # counted channels), so about 0.7 of the MACs; its size's sparsity is that effective figure
    assert t["vs_baseline"]["macs_ratio"] < 0.8 and t["vs_baseline"]["size_ratio"] < 1
    level2 = json.loads((paths.level_dir(chain / "search", 2) / paths.SPARSITY).read_text())["total"]
    assert t["size"]["sparsity"] == pytest.approx(level2["sparsity"], abs=1e-6)
    assert level2["sparsity"] > level2["mask_sparsity"]
    assert t["vs_baseline"]["speedup"] == pytest.approx(base["latency_ms"]["p50"] / t["latency_ms"]["p50"])
    assert t["vs_baseline"]["metrics_delta"]["delta1"] == pytest.approx(t["metrics"]["delta1"] - base["metrics"]["delta1"])
    assert r["machine"]["cpu"] and r["machine"]["cores_physical"] >= 1 and r["onnxruntime"] and r["schema"] == 1
    assert r["test_frames"] == base["metrics"].get("n_images", r["test_frames"]) > 0
    saved = json.loads((tmp_path / "b" / paths.REPORT_JSON).read_text())
    assert saved["models"][1]["path"] == str(ticket)
    md = (tmp_path / "b" / paths.REPORT_MD).read_text()
    assert md.count("\n| ") >= 4 and "(baseline)" in md
    for name in ("accuracy_vs_latency.png", "sparsity_vs_delta1.png", "predictions.png"):
        assert (tmp_path / "b" / name).read_bytes()[:4] == b"\x89PNG"


def test_one_truth_bench_equals_finetune_test_metrics(chain, synth_dir, tmp_path):
    r = bench([], str(chain / "e_dense" / paths.ONNX), synth_dir, tmp_path / "b", runs=2, warmup=1, batch_size=3,
              progress=False)
    ft = json.loads((chain / "dense" / paths.METRICS).read_text())["test"]
    for k in METRIC_KEYS:
        assert r["models"][0]["metrics"][k] == pytest.approx(ft[k], rel=1e-3), k


def test_gates_in_both_directions(chain, synth_dir, tmp_path):
    args = dict(runs=3, warmup=1, batch_size=4, progress=False)
    dense, ticket = str(chain / "e_dense" / paths.ONNX), str(chain / "e_ticket" / paths.ONNX)
    ok = bench([ticket], dense, synth_dir, tmp_path / "ok", gate="delta1_drop<=1,macs_ratio<0.9,rmse_rise<=100", **args)
    assert failed_gates(ok) == []
    bad = bench([ticket], dense, synth_dir, tmp_path / "bad", gate="macs_ratio>=0.95,delta1_drop<=1", **args)
    fails = failed_gates(bad)
    assert len(fails) == 1 and ticket in fails[0] and "macs_ratio" in fails[0] and "fails macs_ratio>=0.95" in fails[0]


@pytest.mark.parametrize("text, match", [
    ("delta1_drop<=0.01,speedup", "write KEY<=VALUE"), ("accuracy>=2", "unknown key 'accuracy'"),
    ("rmse_drop<=1", "unknown key 'rmse_drop'"), ("delta1_rise<1", "unknown key"), ("speedup=>2", "write KEY"),
])
def test_gate_grammar_errors(text, match):
    with pytest.raises(UserError, match=match):
        parse_gates(text)


def test_gate_on_an_unknown_ratio_fails_with_a_reason():
    from edgeticket.bench.gates import check_gates

    entry = {"vs_baseline": {"speedup": 2.0, "macs_ratio": None, "size_ratio": 0.5, "metrics_delta": {"delta1": 0.0}}}
    fails = check_gates(parse_gates("macs_ratio<0.5,speedup>=1.5"), entry)
    assert len(fails) == 1 and "macs_ratio is unknown" in fails[0]


def test_gate_grammar():
    g = parse_gates("delta1_drop<=0.01, speedup>=2,size_ratio<0.5,abs_rel_rise>-1e-3")
    assert [str(x) for x in g] == ["delta1_drop<=0.01", "speedup>=2", "size_ratio<0.5", "abs_rel_rise>-0.001"]


def test_pareto_front():
    pts = [(10, 0.8), (5, 0.7), (20, 0.9), (6, 0.6), (30, 0.85)]
    assert pareto_front(pts, higher_is_better=True) == [1, 0, 2]
    assert pareto_front([(1, 3.0), (2, 2.0), (3, 2.5)], higher_is_better=False) == [0, 1]


def _raw_model(tmp_path, size=(48, 64), name="raw.onnx"):
    model = fold_batchnorm(build_model("fcrn_tiny").eval())
    export_onnx(model, tmp_path / name, size, {})
    return tmp_path / name


def test_model_without_metadata_needs_the_flags(chain, synth_dir, tmp_path):
    raw = _raw_model(tmp_path)
    with pytest.raises(UserError, match="--input-size, --mean, --std"):
        bench([], str(raw), synth_dir, tmp_path / "b", runs=2, progress=False)
    with pytest.raises(UserError, match="pass --std"):
        bench([], str(raw), synth_dir, tmp_path / "b", runs=2, input_size="48x64", mean="0.485,0.456,0.406",
              progress=False)
    r = bench([], str(raw), synth_dir, tmp_path / "b", runs=2, warmup=1, input_size="48x64",
              mean="0.485,0.456,0.406", std="0.229,0.224,0.225", progress=False)
    assert r["models"][0]["info"]["preprocess"]["from"] == "flags"


def test_bench_bad_inputs(chain, synth_dir, tmp_path):
    dense = str(chain / "e_dense" / paths.ONNX)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        bench([str(corrupt)], dense, synth_dir, tmp_path / "b", runs=2, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    card = ModelCard(input_size=(32, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    export_onnx(fold_batchnorm(build_model("fcrn_tiny").eval()), other / "m.onnx", (32, 48), card.to_onnx_props())
    empty = tmp_path / "empty"
    empty.mkdir()
    from test_data import write_mat

    from edgeticket.data.splits import write_splits_mat

    write_mat(empty / "nyu_depth_v2_labeled.mat", n=2)
    write_splits_mat(empty / "splits.mat", np.array([0, 1]), np.array([], dtype=np.int64))
    with pytest.raises(UserError, match="test split is empty"):
        bench([], dense, empty, tmp_path / "b", runs=2, progress=False)
    assert not (tmp_path / "b" / paths.REPORT_JSON).exists()


def test_real_nyu_frames_flow_through_with_the_right_shapes(tmp_path, monkeypatch):
    folder = shared_nyu() / "test_first10"
    raw = _raw_model(tmp_path, (228, 304))
    seen = {}
    import edgeticket.bench.evaluate as ev

    real_update = ev.MetricAccumulator.update

    def spy(self, pred, gt):
        seen.setdefault("pred", pred.shape)
        seen.setdefault("gt", gt.shape)
        seen.setdefault("gt_range", (float(gt[gt > 0].min()), float(gt.max())))
        return real_update(self, pred, gt)

    monkeypatch.setattr(ev.MetricAccumulator, "update", spy)
    r = bench([], str(raw), folder, tmp_path / "b", runs=2, warmup=1, batch_size=5, input_size="228x304",
              mean="0.485,0.456,0.406", std="0.229,0.224,0.225", progress=False)
    assert seen["pred"] == (5, 1, 228, 304) and seen["gt"] == (5, 1, 480, 640)
    assert 0.5 < seen["gt_range"][0] and seen["gt_range"][1] <= 10.0
    m = r["models"][0]["metrics"]
    assert r["test_frames"] == 10 and all(np.isfinite(m[k]) for k in METRIC_KEYS)
    assert 0 <= m["delta1"] <= m["delta2"] <= m["delta3"] <= 1


def test_bench_refuses_out_inside_data(chain, synth_dir):
    with pytest.raises(UserError, match="inside the data folder"):
        bench([], str(chain / "e_dense" / paths.ONNX), synth_dir, synth_dir / "bench", runs=2, progress=False)


def test_mac_metadata_matches_a_fresh_count(chain):
    from helpers import onnx_props

    from edgeticket.models.macs import count_macs
    from edgeticket.models.store import load_model_dir

    md = onnx_props(chain / "e_ticket" / paths.ONNX)
    model, _ = load_model_dir(chain / "e_ticket")
    assert int(md["macs"]) == count_macs(fold_batchnorm(model.eval()), SIZE)
    assert torch.is_tensor(next(model.parameters()))


class _ConstantDepth(torch.nn.Module):
    """Predicts a fixed depth map, whatever the image: a stand-in for a diverged network."""

    def __init__(self, depth: torch.Tensor):
        super().__init__()
        self.register_buffer("fixed", depth[None, None])

    def forward(self, x):
        return x[:, :1].mean(dim=(2, 3), keepdim=True) * 0 + self.fixed


def test_a_diverged_onnx_model_scores_like_bts_and_its_nonfinite_pixels_are_counted(synth_dir, tmp_path):
    h, w = SIZE
    depth = torch.full((h, w), 2.0)
    depth[: h // 4] = float("nan")
    depth[h // 2: h // 2 + 3] = float("inf")
    depth[-2:] = float("-inf")
    bts = depth.clone()  # BTS's rule applied by hand: NaN -> 1e-3, +inf -> 10, -inf -> 1e-3
    bts[: h // 4], bts[h // 2: h // 2 + 3], bts[-2:] = 1e-3, 10.0, 1e-3
    flags = dict(input_size=str(SIZE), mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    for name, d in (("diverged.onnx", depth), ("bts.onnx", bts)):
        export_onnx(_ConstantDepth(d).eval(), tmp_path / name, SIZE, {})
    r = bench([str(tmp_path / "bts.onnx")], str(tmp_path / "diverged.onnx"), synth_dir, tmp_path / "b", runs=2,
              warmup=1, progress=False, **flags)
    diverged, finite = r["models"][0]["metrics"], r["models"][1]["metrics"]
    assert diverged["nonfinite"] == r["test_frames"] * (h // 4 + 3 + 2) * w and finite["nonfinite"] == 0
    for k in METRIC_KEYS:
        assert np.isfinite(diverged[k]) and diverged[k] == pytest.approx(finite[k], rel=1e-6), k
    # a NaN output fails the bench, with no gate asked for, baseline or not; the finite model passes
    assert r["models"][1]["gates"]["passed"] and failed_gates(r) == [
        f"{tmp_path / 'diverged.onnx'}: nonfinite={diverged['nonfinite']}: the model predicted non-finite depth "
        f"(NaN or inf) on {diverged['nonfinite']} pixels"]
    r = bench([str(tmp_path / "diverged.onnx")], str(tmp_path / "bts.onnx"), synth_dir, tmp_path / "b2", runs=2,
              warmup=1, progress=False, gate="delta1_drop<=1", **flags)
    assert not r["models"][1]["gates"]["passed"] and r["models"][1]["gates"]["failed"][0].startswith("nonfinite=")


class _FakeSession:
    """A session whose run takes ``cost`` x the machine's slowness at that moment, on a simulated clock."""

    def __init__(self, name, cost, clock, log):
        self.name, self.cost, self.clock, self.log = name, cost, clock, log

    def get_inputs(self):
        return [type("I", (), {"name": "input"})()]

    def run(self, _outputs, _feed):
        self.log.append(self.name)
        self.clock[0] += self.cost * (1.0 + self.clock[0] / 200.0)  # the machine slows down steadily


def test_interleaved_rounds_cancel_drift_that_a_sequential_pass_does_not(monkeypatch):
    from edgeticket.bench import latency
    from edgeticket.bench.latency import interleaved, speedup_with_interval

    monkeypatch.setattr(latency, "BLOCK_WARMUP_MS", 0.0)  # blocks of a fixed length (the time floor: next test)

    clock, log = [0.0], []
    a, b = _FakeSession("a", 1.0, clock, log), _FakeSession("b", 1.0, clock, log)  # identical models
    times = interleaved([(a, (8, 8)), (b, (8, 8))], 1, rounds=20, runs=100, warmup=2, timer=lambda: clock[0] / 1000)
    assert [t.shape for t in times] == [(20, 5), (20, 5)]
    from edgeticket.bench.latency import BLOCK_WARMUP

    timed = log[4:]  # after two warm-up runs each
    n = 5 + BLOCK_WARMUP  # every block starts with untimed runs after the switch
    blocks = [timed[i:i + n] for i in range(0, len(timed), n)]
    assert len(blocks) == 40 and all(len(blk) == n and len(set(blk)) == 1 for blk in blocks)  # a block per model
    orders = [tuple(blk[0] for blk in blocks[r * 2:r * 2 + 2]) for r in range(20)]
    assert all(sorted(o) == ["a", "b"] for o in orders) and len(set(orders)) == 2  # both models every round, shuffled
    assert all(orders[r + 1] == orders[r][::-1] for r in range(0, 20, 2))  # ABBA: each model first as often
    point, ci = speedup_with_interval(times[0], times[1])
    # one sequential pass: b runs after a, on a slower machine, and looks slower by the drift
    clock[0], log[:] = 0.0, []
    sa = interleaved([(a, (8, 8))], 1, 1, 100, 2, timer=lambda: clock[0] / 1000)[0]
    sb = interleaved([(b, (8, 8))], 1, 1, 100, 2, timer=lambda: clock[0] / 1000)[0]
    sequential = float(np.median(sa) / np.median(sb))
    assert sequential < 0.9  # the drift the rounds are there to cancel
    assert abs(point - 1.0) < abs(sequential - 1.0) / 5 and ci[0] <= 1.0 <= ci[1]


def test_every_block_warms_up_for_a_floor_of_time_before_it_is_timed():
    from edgeticket.bench.latency import BLOCK_WARMUP_MS, interleaved

    class Steady(_FakeSession):  # no drift: a run costs the same whenever it runs
        def run(self, _outputs, _feed):
            self.log.append(self.name)
            self.clock[0] += self.cost

    clock, log = [0.0], []
    fast, slow = Steady("fast", 0.5, clock, log), Steady("slow", 40.0, clock, log)
    interleaved([(fast, (8, 8)), (slow, (8, 8))], 1, rounds=2, runs=6, warmup=0, timer=lambda: clock[0] / 1000)
    blocks, cur = [], None
    for name in log:
        if name != cur:
            blocks.append([name, 0])
            cur = name
        blocks[-1][1] += 1
    # a 0.5 ms model runs ~BLOCK_WARMUP_MS of untimed runs before its 3 timed ones; a 40 ms one 2
    runs = {name: [n for b, n in blocks if b == name] for name in ("fast", "slow")}
    assert sum(runs["slow"]) == 2 * (2 + 3)  # (ABBA: its two blocks are adjacent)
    assert 2 * (BLOCK_WARMUP_MS / 0.5 + 3) <= sum(runs["fast"]) <= 2 * (BLOCK_WARMUP_MS / 0.5 + 4)  # +1: float ticks


def test_speedup_interval_holds_a_known_ratio_and_excludes_a_wrong_one():
    from edgeticket.bench.latency import latency_stats, speedup_with_interval

    rng = np.random.default_rng(0)
    drift = 1 + 0.3 * rng.random((12, 1))  # per-round machine state, shared by both models (paired)
    model = 10.0 * drift * (1 + 0.05 * rng.standard_normal((12, 6)))
    base = 2.0 * 10.0 * drift * (1 + 0.05 * rng.standard_normal((12, 6)))
    point, ci = speedup_with_interval(base, model)
    assert point == pytest.approx(np.median(base) / np.median(model))
    assert ci[0] <= 2.0 <= ci[1] and ci[1] - ci[0] < 0.3 and not ci[0] <= 1.5 <= ci[1]
    st = latency_stats(model, 1)
    assert st["p50"] == pytest.approx(np.median(model)) and st["p50_ci"][0] <= st["p50"] <= st["p50_ci"][1]
    assert st["min"] == model.min() and st["p90"] == pytest.approx(np.percentile(model, 90))
    assert st["rounds"] == 12 and st["runs_per_round"] == 6 and st["bootstrap"] == "rounds"


def test_a_lasting_session_offset_widens_the_interval_instead_of_excluding_one():
    """A byte-identical copy whose three sessions landed 5% and 2% slower and 1% faster (fixed for each
    session's life): resampling rounds alone calls the copy slower; drawing sessions first does not."""
    from edgeticket.bench.latency import latency_stats, speedup_with_interval

    rng = np.random.default_rng(1)
    rounds, sessions = 21, 3
    drift = 1 + 0.05 * rng.random((rounds, 1))
    base = 5.0 * drift * (1 + 0.01 * rng.standard_normal((rounds, 10)))
    offset = np.array([1.05, 1.02, 0.99])[np.arange(rounds) % sessions][:, None]
    copy = 5.0 * drift * offset * (1 + 0.01 * rng.standard_normal((rounds, 10)))
    _, ci_rounds = speedup_with_interval(base, copy)
    point, ci = speedup_with_interval(base, copy, sessions=sessions)
    assert not ci_rounds[0] <= 1.0 <= ci_rounds[1]  # the flaw: a narrow interval around the sessions' mix
    assert ci[0] <= 1.0 <= ci[1] and ci[0] < 0.97 and ci[1] < 1.03
    st = latency_stats(copy, 1, sessions=sessions)
    assert st["sessions"] == 3 and st["bootstrap"] == "sessions, then rounds"
    # the same two-stage draw pairs both models: a real 2x stays clear of 1.5 and holds 2
    point, ci = speedup_with_interval(2 * base, copy / offset, sessions=sessions)
    assert ci[0] <= 2.0 <= ci[1] and ci[0] > 1.5


@pytest.mark.parametrize("speedup, ci, strict, passed, noisy", [
    (1.25, (1.10, 1.40), False, True, True),   # point passes, interval straddles 1.2
    (1.25, (1.10, 1.40), True, False, True),   # strict: the far end 1.10 fails
    (1.15, (1.05, 1.30), False, False, True),  # point fails, within noise
    (1.50, (1.30, 1.70), True, True, False),   # clear pass either way
    (1.00, (0.95, 1.05), False, False, False), # clear fail
])
def test_speedup_gate_within_noise_and_strict(speedup, ci, strict, passed, noisy):
    from edgeticket.bench.gates import judge_gates

    entry = {"vs_baseline": {"speedup": speedup, "speedup_ci": list(ci), "metrics_delta": {}}}
    failed, within = judge_gates(parse_gates("speedup>=1.2"), entry, strict)
    assert (not failed) == passed and bool(within) == noisy
    if noisy:
        assert ("within noise" in within[0]) != strict and f"[{ci[0]:.4g}, {ci[1]:.4g}]" in within[0]


def test_a_copy_of_the_baseline_benches_at_one(chain, synth_dir, tmp_path):
    import shutil

    dense = chain / "e_dense" / paths.ONNX
    copy = tmp_path / "copy" / paths.ONNX
    copy.parent.mkdir()
    shutil.copy(dense, copy)
    r = bench([str(copy)], str(dense), synth_dir, tmp_path / "b", runs=200, rounds=20, warmup=10, batch_size=1,
              limit=2, threads=1, gate="speedup>=1.0")
    v = r["models"][1]["vs_baseline"]
    lo, hi = v["speedup_ci"]
    assert lo <= 1.0 <= hi, v  # the control: a copy is never significantly faster or slower
    # and the point is within 7%, unless the bench itself says the machine is noisier than that (a 2-core
    # AMD EPYC timed this 0.7-0.9 ms model bimodally: 1.22x with an interval of [0.82, 1.37])
    assert 0.93 <= v["speedup"] <= 1.07 or hi - lo > 0.14, v
    lp = r["latency_protocol"]
    assert lp["rounds"] == 20 and lp["runs_per_round"] == 10 and r["session"]["intra_op_threads"] == 1
    assert lp["sessions_per_model"] == 4 and r["models"][1]["latency"]["batch1"]["bootstrap"] == "sessions, then rounds"
    assert set(r["machine"]["isa"]) >= {"avx2", "avx512f", "avx512_vnni"}
    for m in r["models"]:
        b1 = m["latency"]["batch1"]
        assert b1["runs"] == 200 and b1["p50_ci"][0] <= b1["p50"] <= b1["p50_ci"][1]
    assert "p50 95%" in (tmp_path / "b" / paths.REPORT_MD).read_text()


def test_models_of_different_input_sizes_bench_together(chain, synth_dir, tmp_path):
    dense = str(chain / "e_dense" / paths.ONNX)
    card = ModelCard(input_size=(32, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    small = tmp_path / "small" / "model.onnx"
    small.parent.mkdir()
    export_onnx(fold_batchnorm(build_model("fcrn_tiny").eval()), small, (32, 48), card.to_onnx_props())
    r = bench([str(small)], dense, synth_dir, tmp_path / "b", runs=4, rounds=2, warmup=1, batch_size=2, limit=3)
    assert [m["input_size"] for m in r["models"]] == ["48x64", "32x48"]
    assert all(np.isfinite(m["metrics"]["delta1"]) for m in r["models"])
    assert "| 32x48 |" in (tmp_path / "b" / paths.REPORT_MD).read_text()


def _captured(monkeypatch):
    from edgeticket.bench import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figs.append(fig), plots.atomic_path))
    monkeypatch.setattr(plots._plt(), "close", lambda fig: None)
    return plots, figs


def _entry(name, p50, d1, rmse, baseline=False):
    return {"name": name, "baseline": baseline, "latency_ms": {"p50": p50},
            "latency": {"batch1": {"p50_ci": [p50 * 0.9, p50 * 1.1]}}, "metrics": {"delta1": d1, "rmse": rmse}}


def test_a_one_point_pareto_front_is_drawn_as_a_marker(monkeypatch, tmp_path):
    plots, figs = _captured(monkeypatch)
    # the baseline is fastest and best: the front is that one point
    plots.accuracy_vs_latency([_entry("dense", 1.0, 0.9, 0.5, True), _entry("ticket", 2.0, 0.8, 0.6)], tmp_path / "a.png")
    for ax in figs[0].axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["Pareto front (one point)"]
        ring = [ln for ln in ax.get_lines() if ln.get_label() == labels[0]][0]
        assert ring.get_marker() == "o" and list(ring.get_xdata()) == [1.0]
    figs.clear()
    plots.accuracy_vs_latency([_entry("dense", 2.0, 0.9, 0.5, True), _entry("ticket", 1.0, 0.8, 0.6)], tmp_path / "b.png")
    front = [ln for ln in figs[0].axes[0].get_lines() if ln.get_label() == "Pareto front"][0]
    assert list(front.get_xdata()) == [1.0, 2.0] and front.get_linestyle() == "--"


def test_each_criterion_is_its_own_line_and_branches_show_their_spread(monkeypatch, tmp_path):
    plots, figs = _captured(monkeypatch)
    rows = [{"sparsity": s, "delta1": d, "family": "ticket", "criterion": c}
            for c, pts in (("channel", [(0.2, 0.8), (0.4, 0.7)]), ("magnitude-global", [(0.2, 0.85), (0.4, 0.82)]))
            for s, d in pts]
    rows += [{"sparsity": 0.4, "delta1": d, "family": "random", "criterion": "channel"} for d in (0.5, 0.6)]
    plots.sparsity_vs_delta1(rows, tmp_path / "s.png", "t")
    ax = figs[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["random, channel (mean ± sd)", "ticket (IMP, channel)", "ticket (IMP, magnitude-global)"]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["ticket (IMP, channel)"].get_ydata()) == [0.8, 0.7]
    assert list(lines["ticket (IMP, magnitude-global)"].get_ydata()) == [0.85, 0.82]
    assert ax.get_xlabel() == "effective sparsity"
    bars = [c for c in ax.containers if c.get_label() == "random, channel (mean ± sd)"][0]
    seg = bars.lines[2][0].get_segments()[0]
    assert seg[1][1] - seg[0][1] == pytest.approx(2 * np.std([0.5, 0.6]))


def test_sessions_are_made_in_alternating_turns(monkeypatch):
    """A session made later ran ~1% faster for its life: no model may be made first in every turn."""
    import edgeticket.export.onnx_export as ox
    from edgeticket.bench.api import session_pools
    from edgeticket.bench.config import BenchConfig

    made = []
    monkeypatch.setattr(ox, "ort_session", lambda path, *a: made.append(path) or path)
    models = [type("M", (), {"path": p, "sess": type("S", (), {"get_providers": lambda self: ["CPU"]})()})()
              for p in ("a", "b", "c")]
    pools = session_pools(models, BenchConfig(sessions=4, rounds=20))
    assert pools == [["a"] * 4, ["b"] * 4, ["c"] * 4]
    turns = [made[i:i + 3] for i in range(0, 12, 3)]
    assert all(sorted(t) == ["a", "b", "c"] for t in turns)
    assert turns[1] == turns[0][::-1] and turns[3] == turns[2][::-1]
    made.clear()
    assert [len(p) for p in session_pools(models, BenchConfig(sessions=4, rounds=2))] == [2, 2, 2]
