"""FastDepth on MobileNetV2: channel tickets through its depthwise convs, compaction, export, parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import SIZE, onnx_props, tiny_search_config, tiny_train_config

from edgeticket import paths
from edgeticket.bench import api as bench_api
from edgeticket.bench.config import BenchConfig
from edgeticket.export.api import export
from edgeticket.export.compact import check_compaction, compact
from edgeticket.export.config import ExportConfig
from edgeticket.export.fold import fold_batchnorm
from edgeticket.export.onnx_export import ort_session, run_ort
from edgeticket.models import build_model
from edgeticket.models.adapt import adapt_widths, layer_widths
from edgeticket.models.macs import count_macs
from edgeticket.models.store import load_model_dir
from edgeticket.tickets import branches
from edgeticket.tickets.config import BranchConfig
from edgeticket.tickets.criteria import PruneContext, criterion_names, get_criterion
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.criteria.channel import prune_channels
from edgeticket.tickets.groups import channel_groups, prunable_groups
from edgeticket.tickets.imp import alive_widths, search
from edgeticket.tickets.mask import Mask

ARCH = "fastdepth_mobilenet_v2"


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _half_channel_ticket(model):
    scope = C.prunable_names(model)
    groups = prunable_groups(channel_groups(model), set(scope))
    # prune_channels' density is effective (issue 20): half of the channels keep about a quarter of the weights
    mask = prune_channels(dict(model.named_parameters()), C.with_bn_entries(Mask.ones(model, scope), groups), groups,
                          0.25, round_to=1).mask
    mask.apply_(model)
    return mask, groups


def test_depthwise_convs_couple_their_input_and_output_channels():
    groups = channel_groups(build_model(ARCH))
    by_producer = {p: g for g in groups for p in g.producers}
    # an inverted residual's expand conv and its depthwise conv lose the same channels
    g = by_producer["encoder.features.5.conv.0.0"]
    assert "encoder.features.5.conv.1.0" in g.producers and g.consumers == ["encoder.features.5.conv.2"]
    # the decoder's 1/8 stage is one group with the encoder's 1/8 blocks it adds to
    assert {"decoder.conv2.pw.0", "encoder.features.6.conv.2", "decoder.conv3.dw.0"} <= set(by_producer["decoder.conv2.pw.0"].producers)
    assert "encoder.features.0.0" not in {w.removesuffix(".weight") for w in C.prunable_names(build_model(ARCH))}


def test_half_channel_ticket_compacts_exactly_with_the_counted_macs():
    torch.manual_seed(0)
    model = _randomize_bn(build_model(ARCH))
    mask, groups = _half_channel_ticket(model)
    c = compact(model)
    assert c.channels_removed > 0.4 * sum(g.channels for g in groups)
    dw = c.model.encoder.features[7].conv[1][0]
    assert dw.groups == dw.in_channels == dw.out_channels < 192  # still depthwise once narrowed
    res = check_compaction(model, c, [("random", torch.randn(2, 3, *SIZE))])
    assert res["random"]["max_rel"] < 1e-5
    # the counter on the compacted model equals the count from the mask's alive widths alone
    for size in (SIZE, (224, 224)):
        assert count_macs(c.model, size) == count_macs(model, size, alive_widths(model, mask, groups))
    assert count_macs(c.model, (224, 224)) < 0.5 * count_macs(model, (224, 224))
    # and the compacted shapes rebuild from widths alone (meta.json's route)
    rebuilt = adapt_widths(build_model(ARCH), layer_widths(c.model))
    rebuilt.load_state_dict(c.model.state_dict())
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), c.model(x))
        assert (fold_batchnorm(model)(x) - model(x)).abs().max() < 1e-4 * model(x).abs().max()


@pytest.mark.parametrize("crit", criterion_names())
def test_every_criterion_prunes_fastdepth_to_its_budget(crit):
    """Level 1 of every criterion on the MobileNetV2 model: the budget kept, the mask fits, and a
    structured criterion's dead channels are exactly what compaction removes."""
    torch.manual_seed(1)
    model = _randomize_bn(build_model(ARCH))
    scope = C.prunable_names(model)
    groups = prunable_groups(channel_groups(model), set(scope))
    c = get_criterion(crit)
    ctx = PruneContext(groups=groups if c.structured else [], round_to=1)
    mask = c.initial_mask(Mask.ones(model, scope), ctx)
    res = c.prune(dict(model.named_parameters()), mask, 0.5, ctx)
    res.mask.check_fits(model, "fastdepth")
    # the criterion's density is effective (issue 20): masked or in a dead channel counts as pruned
    from edgeticket.tickets.sparsity import effective_sparsity

    # ... except IMP-Refill's, which keeps each layer's mask budget (Structure-LTH's int(alive / filter size))
    if crit == "refill":
        kept = sum(int(res.mask[k].sum()) for k in res.mask.weight_keys()) / sum(
            res.mask[k].numel() for k in res.mask.weight_keys())
    else:
        kept = 1 - effective_sparsity(res.mask, model, groups if c.structured else None)
    assert 0.3 < kept < 0.7, (crit, kept)
    if c.structured:
        res.mask.apply_(model)
        comp = compact(model)
        dead = sum(int(C.channel_dead(res.mask, g).sum()) for g in groups)
        floors = sum(1 for g in groups if bool(C.channel_dead(res.mask, g).all()))  # one channel kept per layer
        assert comp.channels_removed == dead - floors > 0
        assert check_compaction(model, comp, [("random", torch.randn(1, 3, *SIZE))])["random"]["max_rel"] < 1e-5


@pytest.fixture(scope="module")
def fastdepth_search(cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("fd") / "s"
    search(cache, root, tiny_search_config(tiny_train_config(epochs=1), arch=ARCH, input_size=SIZE, val_fraction=0.15,
                                          levels=2, criterion="channel", rate=0.5, round_to=8), progress=False)
    return root


def test_two_level_channel_search_exports_a_compacted_ticket_with_ort_parity(fastdepth_search, tmp_path):
    src = paths.level_dir(fastdepth_search, 1)  # levels 0 (dense) and 1 (half the channels)
    r = export(src, tmp_path / "e", ExportConfig(), progress=False)
    out = tmp_path / "e"
    assert r["compaction"]["channels_removed"] > 0
    assert r["after"]["macs"] < 0.7 * r["before"]["macs"] and r["after"]["params"] < r["before"]["params"]
    assert any(k.startswith("encoder.features.") for k in r["widths"]) and any(k.startswith("decoder.") for k in r["widths"])
    assert max(v["max_rel"] for v in r["compaction"]["parity"].values()) < 1e-4
    assert max(v["max_rel"] for v in r["parity"].values()) < 1e-4
    onnx.checker.check_model(onnx.load(str(out / paths.ONNX)), full_check=True)
    md = onnx_props(out / paths.ONNX)
    assert md["arch"] == ARCH and md["input_size"] == "48x64" and int(md["macs"]) == r["after"]["macs"]
    model, _ = load_model_dir(out)
    assert count_macs(fold_batchnorm(model), SIZE) == r["after"]["macs"]
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    got = run_ort(ort_session(out / paths.ONNX), x.numpy())
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def test_fastdepth_ticket_int8_and_bench(fastdepth_search, cache, synth_dir, tmp_path):
    src = paths.level_dir(fastdepth_search, 1)
    r = export(src, tmp_path / "e", ExportConfig(int8=True, calib_images=8), progress=False)
    assert r["int8"]["output_vs_fp32"]["max_rel"] < 0.25 and onnx_props(tmp_path / "e" / paths.ONNX_INT8)["arch"] == ARCH
    fp32, int8 = tmp_path / "e" / paths.ONNX, tmp_path / "e" / paths.ONNX_INT8
    rep = bench_api.bench([str(int8)], str(fp32), synth_dir, tmp_path / "b",
                          BenchConfig(runs=3, warmup=1, batch_size=2, limit=4, panel_frames=0), progress=False)
    rows = rep["models"]
    assert [m["path"] for m in rows] == [str(fp32), str(int8)]
    assert all(m["metrics"]["nonfinite"] == 0 and m["latency_ms"]["p50"] > 0 for m in rows)
    assert rows[0]["size"]["macs"] == r["after"]["macs"]


def test_a_random_branch_of_the_fastdepth_ticket_trains(fastdepth_search):
    res = branches.run_branches(fastdepth_search, "random", BranchConfig(level=1, seeds=1), progress=False)
    assert [r["status"] for r in res] == ["trained"]
    ticket, control = Mask.load(paths.level_dir(fastdepth_search, 1)), Mask.load(res[0]["path"])
    for k in ticket.weight_keys():  # the same per-group channel counts, other channels
        assert int(ticket[k].flatten(1).any(1).sum()) == int(control[k].flatten(1).any(1).sum()), k
    assert any(not torch.equal(ticket[k], control[k]) for k in ticket.weight_keys())
