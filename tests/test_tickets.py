"""The IMP search, its resume, baselines as branches, refill and ticket import."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
import torch
from helpers import SIZE, tiny_search_config, tiny_train_config
from torch.nn.utils import prune

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.hparams import parse_value
from edgeticket.models import build_model
from edgeticket.tickets import branches
from edgeticket.tickets.config import BranchConfig, SearchConfig
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.criteria import criterion_names
from edgeticket.tickets.criteria.magnitude import magnitude_global, magnitude_layerwise
from edgeticket.tickets.formats import read_ticket as import_ticket
from edgeticket.tickets.groups import channel_groups, prunable_groups
from edgeticket.tickets.imp import search
from edgeticket.tickets.mask import Mask


def cfg(criterion, levels=3, round_to=1, train=None, rewind="pretrained", **kw):
    rewind = parse_value(SearchConfig, {f.name: f for f in fields(SearchConfig)}["rewind"], rewind)  # as the CLI does
    return tiny_search_config(train or tiny_train_config(epochs=1), input_size=SIZE, val_fraction=0.15, levels=levels,
                              criterion=criterion, round_to=round_to, rewind=rewind, **kw)


def run_branches(root, level, kind, progress=False, **kw):
    return branches.run_branches(root, kind, BranchConfig(level=level, **kw), progress=progress)


@pytest.fixture(scope="module")
def searches(cache, tmp_path_factory):
    """A finished 3-level search for each criterion."""
    out = {}
    for crit in criterion_names():
        root = tmp_path_factory.mktemp(crit)
        search(cache, root / "s", cfg(crit), progress=False)
        out[crit] = root / "s"
    return out


def masks(root, levels=3):
    return [Mask.load(paths.level_dir(root, k)) for k in range(levels)]


@pytest.mark.parametrize("crit", ["magnitude-global", "magnitude-layerwise"])
def test_unstructured_schedule_and_nesting(searches, crit):
    ms = masks(searches[crit])
    assert ms[0].sparsity() == 0.0 and all(v.all() for v in ms[0].values())
    for k, m in enumerate(ms):
        total = sum(m[n].numel() for n in m.weight_keys())
        alive = sum(int(m[n].sum()) for n in m.weight_keys())
        assert abs(alive - round(total * 0.8 ** k)) <= (len(m) if crit == "magnitude-layerwise" else 0)
        if crit == "magnitude-layerwise":
            for n in m.weight_keys():
                assert abs(int(m[n].sum()) - round(m[n].numel() * 0.8 ** k)) <= 1
    for a, b in zip(ms, ms[1:], strict=False):
        assert b.is_nested_in(a)
    assert all(v.dim() == 4 for v in ms[1].values())  # unstructured: no BN entries
    assert "encoder.conv1.weight" not in ms[0] and "head.weight" not in ms[0]


def _compacted_sparsity(level_dir, mask):
    """1 - (prunable weights after compaction / before), compaction by export.compact."""
    from edgeticket.export.compact import compact

    model = build_model("fcrn_tiny")
    model.load_state_dict(torch.load(level_dir / paths.MODEL, weights_only=True))
    after = dict(compact(model).model.named_parameters())
    dense = dict(model.named_parameters())
    keys = mask.weight_keys()
    return 1 - sum(after[k].numel() for k in keys) / sum(dense[k].numel() for k in keys)


def test_channel_tickets_mask_whole_channels_and_their_bn(searches):
    root = searches["channel"]
    ms = masks(root)
    model = build_model("fcrn_tiny")
    groups = prunable_groups(channel_groups(model), set(ms[0].weight_keys()))
    decoder_pruned = False
    for k, m in enumerate(ms):
        # the effective budget is the unstructured one, (1 - rate)^k, within the widths' rounding
        sp = json.loads((paths.level_dir(root, k) / paths.SPARSITY).read_text())["total"]
        assert sp["sparsity"] == pytest.approx(1 - 0.8 ** k, abs=0.02), k
        assert sp["sparsity"] == pytest.approx(_compacted_sparsity(paths.level_dir(root, k), m), abs=0.01)
        assert sp["mask_sparsity"] == pytest.approx(m.sparsity(), abs=1e-12)
        if k:
            assert sp["mask_sparsity"] < sp["sparsity"] - 0.05  # dead channels take their consumers' inputs
        widest = max(groups, key=lambda g: g.channels)
        f = int(C.channel_alive(m, widest).sum()) / widest.channels
        for g in groups:
            alive = C.channel_alive(m, g)
            assert abs(int(alive.sum()) - g.channels * f) <= 1, (g.name, k)  # one channel fraction for all groups
            for w in g.weight_names():
                per_channel = m[w].flatten(1)
                assert (per_channel.all(dim=1) | ~per_channel.any(dim=1)).all()  # whole channels only
                assert torch.equal(per_channel.any(dim=1), alive)
            for b in g.bn_param_names():
                assert torch.equal(m[b], alive)
            decoder_pruned |= g.name.startswith("decoder.up") and k > 0 and not alive.all()
    assert decoder_pruned
    for a, b in zip(ms, ms[1:], strict=False):
        assert b.is_nested_in(a)
    # the trained weights of a pruned channel, and its BN, are exactly zero
    sd = torch.load(paths.level_dir(root, 2) / paths.MODEL, weights_only=True)
    for name, m in ms[2].items():
        assert (sd[name][~m] == 0).all()


def test_round_to_keeps_hardware_friendly_widths(cache, tmp_path):
    search(cache, tmp_path / "s", cfg("channel", levels=2, round_to=8), progress=False)
    m = Mask.load(paths.level_dir(tmp_path / "s", 1))
    groups = prunable_groups(channel_groups(build_model("fcrn_tiny")), set(m.weight_keys()))
    for g in groups:
        n = int(C.channel_alive(m, g).sum())
        assert n % 8 == 0 or n == g.channels or n == min(8, g.channels)
        assert abs(n - g.channels * 0.8 ** 0.5) <= 8  # effective density 0.8: about sqrt(0.8) of the channels


def test_level_files_summary_and_plot(searches):
    root = searches["channel"]
    for k in range(3):
        d = paths.level_dir(root, k)
        for f in (paths.MASK, paths.MODEL, paths.META, paths.METRICS, paths.SPARSITY):
            assert (d / f).exists(), (d, f)
        metrics = json.loads((d / paths.METRICS).read_text())
        assert "delta1" in metrics["val"] and "delta1" in metrics["test"]
        sp = json.loads((d / paths.SPARSITY).read_text())
        assert {"total", "layers", "macs"} <= set(sp)
    summary = json.loads((root / paths.SUMMARY_JSON).read_text())
    assert [r["level"] for r in summary["rows"]] == [0, 1, 2]
    assert summary["rows"][2]["macs"] < summary["rows"][0]["macs"]
    assert (root / paths.SUMMARY_PNG).read_bytes()[:4] == b"\x89PNG"
    assert "| 02 |" in (root / paths.SUMMARY_MD).read_text()


def test_target_sparsity_stops_the_search(cache, tmp_path):
    search(cache, tmp_path / "s", cfg("magnitude-global", levels=5, target_sparsity=0.3), progress=False)
    assert paths.level_dir(tmp_path / "s", 2).exists() and not paths.level_dir(tmp_path / "s", 3).exists()
    assert Mask.load(paths.level_dir(tmp_path / "s", 2)).sparsity() == pytest.approx(0.3, abs=1e-3)


def test_search_resume_gives_bit_identical_masks(cache, searches, tmp_path, monkeypatch):
    """Die after level 1's mask is written, before it trains; resume; compare with an uninterrupted run."""
    import edgeticket.tickets.imp as imp

    real = imp.train_masked

    def dies_at_level_1(ctx, folder, *a, **k):
        if folder.name == "level_01":
            raise RuntimeError("killed")
        return real(ctx, folder, *a, **k)

    root = tmp_path / "s"
    monkeypatch.setattr(imp, "train_masked", dies_at_level_1)
    with pytest.raises(RuntimeError, match="killed"):
        search(cache, root, cfg("magnitude-global"), progress=False)
    assert (paths.level_dir(root, 1) / paths.MASK).exists() and not (paths.level_dir(root, 1) / paths.LAST).exists()
    monkeypatch.setattr(imp, "train_masked", real)
    search(cache, root, cfg("magnitude-global"), resume=True, progress=False)
    full = searches["magnitude-global"]
    for a, b in zip(masks(root), masks(full), strict=True):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    for k in range(3):
        ma = json.loads((paths.level_dir(root, k) / paths.METRICS).read_text())
        mb = json.loads((paths.level_dir(full, k) / paths.METRICS).read_text())
        assert ma["val"] == pytest.approx(mb["val"], rel=1e-9)


def test_search_refuses_other_settings_on_resume_and_a_nonempty_out(cache, searches):
    with pytest.raises(UserError, match="other settings"):
        search(cache, searches["magnitude-global"], cfg("magnitude-global", rate=0.5), resume=True, progress=False)
    with pytest.raises(UserError, match="--overwrite"):
        search(cache, searches["magnitude-global"], cfg("magnitude-global"), progress=False)


@pytest.mark.parametrize("bad, match", [
    (dict(levels=0), "--levels 0"), (dict(rate=-0.1), "--rate"), (dict(target_sparsity=1.0), "--target-sparsity"),
    (dict(criterion="snip"), "--criterion 'snip'"), (dict(rewind="late"), "--rewind"), (dict(scope="head"), "--scope"),
])
def test_search_option_errors(cache, tmp_path, bad, match):
    kw = dict(criterion="magnitude-global")
    kw.update(bad)
    with pytest.raises(UserError, match=match):
        search(cache, tmp_path / "s", cfg(**kw), progress=False)
    assert not (tmp_path / "s").exists()


def test_layer_collapse_is_refused():
    model = build_model("fcrn_tiny")
    m = Mask.ones(model, C.prunable_names(model))
    w = dict(model.named_parameters())
    with pytest.raises(UserError, match="below one filter"):
        magnitude_global(w, m, 1e-5)
    res = magnitude_layerwise(w, m, 1e-5)
    for k in res.mask.weight_keys():
        assert int(res.mask[k].sum()) >= res.mask[k][0].numel()
    assert res.notes and "floor" in res.notes[0]


@pytest.mark.parametrize("rewind", ["step:2", "epoch:1"])
def test_late_rewinding_saves_the_rewind_point(cache, tmp_path, rewind):
    c = cfg("magnitude-global", levels=2, rewind=rewind, train=tiny_train_config(epochs=2))
    search(cache, tmp_path / "s", c, progress=False)
    rw = torch.load(paths.level_dir(tmp_path / "s", 0) / paths.REWIND, weights_only=True)
    start = torch.load(tmp_path / "s" / "start.pt", weights_only=True)
    final = torch.load(paths.level_dir(tmp_path / "s", 0) / paths.FINAL, weights_only=True)
    k = "encoder.layer1.0.conv1.weight"
    assert not torch.equal(rw[k], start[k]) and not torch.equal(rw[k], final[k])


def test_late_rewinding_continues_level_0s_schedule(cache, tmp_path):
    """open_lth: levels >= 1 resume at step K and train the rest, with level 0's learning rates."""
    from edgeticket.fsio import read_jsonl

    c = cfg("magnitude-global", levels=2, rewind="epoch:1", train=tiny_train_config(epochs=3, warmup_epochs=0.5))
    search(cache, tmp_path / "s", c, progress=False)
    log0 = read_jsonl(paths.level_dir(tmp_path / "s", 0) / paths.LOG)
    log1 = read_jsonl(paths.level_dir(tmp_path / "s", 1) / paths.LOG)
    assert [r["epoch"] for r in log0] == [0, 1, 2] and [r["epoch"] for r in log1] == [1, 2]
    assert [r["lr"] for r in log1] == pytest.approx([r["lr"] for r in log0[1:]], rel=1e-12)
    assert len({r["lr"] for r in log0}) == 3  # the schedule moves, so equal rates are not a coincidence


def test_rewind_point_beyond_level_0_is_refused(cache, tmp_path):
    with pytest.raises(UserError, match="--rewind epoch:3"):
        search(cache, tmp_path / "s", cfg("magnitude-global", levels=2, rewind="epoch:3"), progress=False)


def test_rewind_init_starts_every_level_from_one_random_init(cache, tmp_path):
    search(cache, tmp_path / "s", cfg("magnitude-global", levels=2, rewind="init"), progress=False)
    init = torch.load(tmp_path / "s" / "init.pt", weights_only=True)
    torch.manual_seed(0)
    fresh = build_model("fcrn_tiny").state_dict()  # the seed's random initialisation
    assert all(torch.equal(init[k], fresh[k]) for k in init)
    assert not (tmp_path / "s" / "start.pt").exists()  # level 0 trained from init.pt too


# -- branches --------------------------------------------------------------------------------------

def test_random_branches_match_the_sparsity_per_layer(searches):
    root = searches["magnitude-layerwise"]
    res = run_branches(root, 2, "random", seeds=2, progress=False)
    ticket = Mask.load(paths.level_dir(root, 2))
    rand = [Mask.load(r["path"]) for r in res]
    for k in ticket.weight_keys():
        assert all(int(r[k].sum()) == int(ticket[k].sum()) for r in rand)
    assert not torch.equal(rand[0]["encoder.layer2.0.conv1.weight"], rand[1]["encoder.layer2.0.conv1.weight"])
    summary = json.loads((root / paths.SUMMARY_JSON).read_text())
    assert {"random_s0", "random_s1"} <= {r["branch"] for r in summary["rows"]}
    # ticket vs random (mean ± sample std over the seeds) vs dense, from the metrics files themselves
    comp = next(c for c in summary["comparisons"] if c["level"] == 2)
    metrics = {name: json.loads((d / paths.METRICS).read_text()) for name, d in (
        ("ticket", paths.level_dir(root, 2)), ("dense", paths.level_dir(root, 0)),
        *((r["branch"], paths.Path(r["path"])) for r in res))}
    for split in ("val", "test"):
        seeds = np.array([metrics[r["branch"]][split]["delta1"] for r in res])
        band = comp["baselines"]["random"][split]["delta1"]
        assert band["mean"] == pytest.approx(seeds.mean(), abs=1e-12) and band["n"] == 2
        assert band["std"] == pytest.approx(seeds.std(ddof=1), abs=1e-12)
        assert comp["ticket"][split]["delta1"] == metrics["ticket"][split]["delta1"]
        assert comp["dense"][split]["delta1"] == metrics["dense"][split]["delta1"]
    md = (root / paths.SUMMARY_MD).read_text()
    v = comp["baselines"]["random"]["val"]["delta1"]
    assert f"| 02 | {comp['sparsity']:.3f} | random | 2 | " in md and f"{v['mean']:.4f} ± {v['std']:.4f}" in md
    again = run_branches(root, 2, "random", seeds=2, progress=False)
    assert all(r["status"] == "already done" for r in again)


def test_reverse_reinit_and_oneshot_branches(searches):
    root = searches["magnitude-global"]
    out = {r["branch"]: r for kind in ("reverse", "reinit") for r in run_branches(root, 1, kind, progress=False)}
    out.update({r["branch"]: r for r in run_branches(root, 1, "oneshot", sparsity=0.5, progress=False)})
    ticket = Mask.load(paths.level_dir(root, 1))
    rev = Mask.load(out["reverse"]["path"])
    dense = torch.load(paths.level_dir(root, 0) / paths.FINAL, weights_only=True)
    for k in ticket.weight_keys():  # the inverse of one-shot magnitude pruning, computed apart with numpy
        n = int(ticket[k].sum())
        lowest = np.argsort(np.abs(dense[k].numpy()).ravel(), kind="stable")[:n]
        expect = np.zeros(ticket[k].numel(), dtype=bool)
        expect[lowest] = True
        assert np.array_equal(rev[k].numpy().ravel(), expect), k
    reinit = Mask.load(out["reinit"]["path"])
    assert set(reinit) == set(ticket) and all(torch.equal(reinit[k], ticket[k]) for k in ticket)
    assert Mask.load(out["oneshot_0.500"]["path"]).sparsity() == pytest.approx(0.5, abs=1e-3)
    for r in out.values():
        assert (paths.Path(r["path"]) / paths.METRICS).exists()


def test_channel_reverse_keeps_the_lowest_l1_channels_of_the_dense_model(searches):
    root = searches["channel"]
    res = run_branches(root, 2, "reverse", progress=False)
    rev, ticket = Mask.load(res[0]["path"]), Mask.load(paths.level_dir(root, 2))
    dense = torch.load(paths.level_dir(root, 0) / paths.FINAL, weights_only=True)
    groups = prunable_groups(channel_groups(build_model("fcrn_tiny")), set(ticket.weight_keys()))
    for g in groups:
        l1 = sum(np.abs(dense[w].double().numpy()).reshape(g.channels, -1).sum(axis=1) for w in g.weight_names())
        expect = np.zeros(g.channels, dtype=bool)
        expect[np.argsort(l1, kind="stable")[:int(C.channel_alive(ticket, g).sum())]] = True
        for w in g.weight_names():
            assert np.array_equal(rev[w].flatten(1).all(dim=1).numpy(), expect), g.name
            assert np.array_equal(rev[w].flatten(1).any(dim=1).numpy(), expect), g.name
        for b in g.bn_param_names():
            assert np.array_equal(rev[b].numpy(), expect)


def test_channel_random_branch_is_a_channel_ticket(searches):
    root = searches["channel"]
    res = run_branches(root, 1, "random", seeds=1, progress=False)
    m = Mask.load(res[0]["path"])
    ticket = Mask.load(paths.level_dir(root, 1))
    assert m.channel_sparsity() == pytest.approx(ticket.channel_sparsity(), abs=1e-9)
    assert any(v.dim() == 1 for v in m.values())
    for g in prunable_groups(channel_groups(build_model("fcrn_tiny")), set(m.weight_keys())):
        assert all(torch.equal(m[b], C.channel_alive(m, g)) for b in g.bn_param_names())  # BN follows its channels
    sp = [json.loads((d / paths.SPARSITY).read_text())["total"]["sparsity"] for d in (paths.Path(res[0]["path"]), paths.level_dir(root, 1))]
    assert sp[0] == pytest.approx(sp[1], abs=1e-9)  # same channel counts per group: the same effective budget


def _expected_refill(pruned, groups, before):
    """Structure-LTH's rule, computed apart: per group int(alive / filter size) channels with the
    most survivors (ties by index), among the channels alive before."""
    out = {}
    for g in groups:
        counts = sum(pruned[w].flatten(1).sum(dim=1).numpy() for w in g.weight_names())
        n = int(counts.sum()) // sum(pruned[w][0].numel() for w in g.weight_names())
        ranked = [i for i in np.argsort(-counts, kind="stable") if C.channel_alive(before, g)[i]]
        keep = np.zeros(g.channels, dtype=bool)
        keep[ranked[:max(1, n)]] = True
        out[g.name] = keep
    return out


def _whole_rows(m):
    return all(bool((v.flatten(1).all(dim=1) | ~v.flatten(1).any(dim=1)).all()) for v in (m[k] for k in m.weight_keys()))


def test_refill_criterion_keeps_imps_per_layer_budget_in_whole_channels(searches):
    root = searches["refill"]
    ms = masks(root)
    groups = prunable_groups(channel_groups(build_model("fcrn_tiny")), set(ms[0].weight_keys()))
    for k, m in enumerate(ms):
        assert _whole_rows(m), k  # whole output channels, in every layer
        assert m.density() == pytest.approx(0.8 ** k, abs=0.03), k  # the mask keeps IMP's budget
        for g in groups:
            alive = C.channel_alive(m, g)
            assert all(torch.equal(m[b], alive) for b in g.bn_param_names())
    for k in (1, 2):  # each level: global magnitude from the previous mask, then the refill rule
        prev = paths.level_dir(root, k - 1)
        pruned = magnitude_global(torch.load(prev / paths.FINAL, weights_only=True), ms[k - 1], 0.8 ** k).mask
        for g, keep in zip(groups, _expected_refill(pruned, groups, ms[k - 1]).values(), strict=True):
            assert np.array_equal(C.channel_alive(ms[k], g).numpy(), keep), (k, g.name)
    assert json.loads((paths.level_dir(root, 2) / paths.META).read_text())["criterion"] == "refill"


def test_tickets_refill_converts_an_unstructured_level_by_the_same_rule(searches):
    root = searches["magnitude-global"]
    res = run_branches(root, 2, "refill", progress=False)
    assert res[0]["path"].endswith("branch_refill")
    m, ticket = Mask.load(res[0]["path"]), Mask.load(paths.level_dir(root, 2))
    groups = prunable_groups(channel_groups(build_model("fcrn_tiny")), set(m.weight_keys()))
    assert _whole_rows(m) and m.density() == pytest.approx(ticket.density(), abs=0.03)
    for g, keep in zip(groups, _expected_refill(ticket, groups, ticket).values(), strict=True):
        assert np.array_equal(C.channel_alive(m, g).numpy(), keep), g.name
    meta = json.loads((paths.Path(res[0]["path"]) / paths.META).read_text())
    assert meta["branch"] == "refill" and meta["criterion"] == "refill"
    with pytest.raises(UserError, match="already channel tickets"):
        run_branches(searches["channel"], 1, "refill", progress=False)


def test_branch_of_an_unfinished_level_is_refused(searches):
    with pytest.raises(UserError, match="not a finished level"):
        run_branches(searches["channel"], 7, "random", progress=False)


# -- import ------------------------------------------------------------------------------------------

def _pruned_resnet_checkpoint(arch="fcrn_tiny"):
    """An ImageNet-style ResNet pruned with torch.nn.utils.prune (weight_orig / weight_mask)."""
    enc = build_model(arch).encoder
    convs = [(m, "weight") for n, m in enc.named_modules() if isinstance(m, torch.nn.Conv2d) and n != "conv1"]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=0.6)
    return enc.state_dict()


def test_import_a_torch_prune_checkpoint_with_module_prefix(tmp_path):
    sd = {f"module.{k}": v for k, v in _pruned_resnet_checkpoint().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ticket.pth.tar")
    mask, notes = import_ticket(tmp_path / "ticket.pth.tar", "fcrn_tiny")
    assert "encoder.layer1.0.conv1.weight" in mask and "encoder.layer2.0.downsample.0.weight" in mask
    assert not any(k.startswith("decoder") for k in mask)
    assert mask.sparsity() == pytest.approx(0.6, abs=1e-3)


def test_import_a_plain_mask_dict(tmp_path):
    sd = _pruned_resnet_checkpoint()
    masks_only = {k: v for k, v in sd.items() if k.endswith("_mask")}
    masks_only["fc.weight_mask"] = torch.ones(10, 128)
    torch.save(masks_only, tmp_path / "mask.pt")
    mask, notes = import_ticket(tmp_path / "mask.pt", "fcrn_tiny")
    assert any("fc.weight" in n for n in notes)
    assert len(mask) == len([k for k in masks_only if not k.startswith("fc.")])


@pytest.mark.parametrize("problem, match", [
    ("wrong_arch", "shape"), ("missing", "has no mask for"), ("non_binary", "other than 0 and 1"),
    ("foreign", "names no layer"), ("nothing", "no '\\*.weight_mask'"),
])
def test_import_errors_name_the_key(tmp_path, problem, match):
    sd = {k: v for k, v in _pruned_resnet_checkpoint().items() if k.endswith("_mask")}
    if problem == "wrong_arch":
        sd = {k: v for k, v in _pruned_resnet_checkpoint("fcrn_resnet18").items() if k.endswith("_mask")}
    elif problem == "missing":
        del sd["layer3.1.conv2.weight_mask"]
    elif problem == "non_binary":
        sd["layer1.0.conv1.weight_mask"] = sd["layer1.0.conv1.weight_mask"] * 0.5
    elif problem == "foreign":
        sd["transformer.blocks.0.weight_mask"] = torch.ones(3)
    elif problem == "nothing":
        sd = {"layer1.0.conv1.weight": torch.ones(3)}
    torch.save(sd, tmp_path / "t.pth")
    with pytest.raises(UserError, match=match):
        import_ticket(tmp_path / "t.pth", "fcrn_tiny")


class NotATensor:
    """Any class: loading it needs pickle."""


def test_import_refuses_pickle_unless_allowed(tmp_path):
    sd = {k: v for k, v in _pruned_resnet_checkpoint().items() if k.endswith("_mask")}
    torch.save({"state_dict": sd, "extra": NotATensor()}, tmp_path / "t.pth")
    with pytest.raises(UserError, match="--allow-pickle"):
        import_ticket(tmp_path / "t.pth", "fcrn_tiny")
    mask, _ = import_ticket(tmp_path / "t.pth", "fcrn_tiny", allow_pickle=True)
    assert mask.sparsity() > 0.5



# -- the criteria registry -------------------------------------------------------------------------

def test_a_new_criterion_is_one_class_and_one_registration(cache, tmp_path):
    """A toy criterion, registered here, is a --criterion of the CLI and prunes a real search."""
    from typer.testing import CliRunner

    from edgeticket.cli.app import app
    from edgeticket.tickets import criteria
    from edgeticket.tickets.criteria import Criterion, register_criterion
    from edgeticket.tickets.criteria.common import PruneResult

    @register_criterion
    class KeepFirst(Criterion):
        """Keep the first density x n weights of every layer, by position (a toy, not a method)."""

        name = "toy-keep-first"

        def prune(self, weights, mask, density, ctx):
            out = Mask(mask)
            for k in mask.weight_keys():
                keep = torch.zeros(mask[k].numel(), dtype=torch.bool)
                keep[: round(mask[k].numel() * density)] = True
                out[k] = keep.view_as(mask[k]) & mask[k]
            return PruneResult(out)

    try:
        res = CliRunner().invoke(app, ["search", "--data", str(cache), "--out", str(tmp_path / "s"), "--criterion",
                                       "toy-keep-first", "--arch", "fcrn_tiny", "--pretrained", "none", "--levels", "2",
                                       "--epochs", "1", "--batch-size", "4", "--quiet"])
        assert res.exit_code == 0, res.output
        m = Mask.load(paths.level_dir(tmp_path / "s", 1))
        for k in m.weight_keys():
            n = round(m[k].numel() * 0.8)
            assert m[k].flatten()[:n].all() and not m[k].flatten()[n:].any(), k
        assert json.loads((paths.level_dir(tmp_path / "s", 1) / paths.META).read_text())["criterion"] == "toy-keep-first"
    finally:
        criteria._CRITERIA.pop("toy-keep-first")
    with pytest.raises(UserError, match="--criterion 'toy-keep-first'"):
        cfg("toy-keep-first")
