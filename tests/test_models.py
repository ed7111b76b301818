"""FCRN builders, the fast up-projection, MAC counting, pretrained loading."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from edgeticket.errors import UserError
from edgeticket.models import build_model, get_record, list_models
from edgeticket.models.fcrn import Resize
from edgeticket.models.macs import count_macs
from edgeticket.models.upproj import FastUpConv, NaiveUpConv


@pytest.mark.parametrize("name", list_models())
def test_builder_shapes_and_names(name):
    model = build_model(name).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 64, 80)
    names = dict(model.named_parameters())
    assert "encoder.layer1.0.conv1.weight" in names
    assert "encoder.fc.weight" not in names and not any("avgpool" in n for n in names)
    assert "head.weight" in names and names["head.weight"].shape[0] == 1
    rec = get_record(name)
    assert names["decoder.conv.weight"].shape[0] == rec.decoder_widths[0]
    assert names["decoder.up4.conv2.weight"].shape[0] == rec.decoder_widths[4]


@pytest.mark.parametrize("name", list_models())
def test_record_macs_match_the_counter(name):
    rec = get_record(name)
    assert rec.input_size == (228, 304) and len(rec.mean) == 3 and len(rec.std) == 3
    assert count_macs(build_model(name), rec.input_size) == rec.macs


def test_tiny_is_a_quarter_of_resnet18():
    tiny, r18 = dict(build_model("fcrn_tiny").named_parameters()), dict(build_model("fcrn_resnet18").named_parameters())
    assert set(k for k in tiny if k.startswith("encoder.")) == set(k for k in r18 if k.startswith("encoder."))
    assert tiny["encoder.layer4.1.conv2.weight"].shape[0] * 4 == r18["encoder.layer4.1.conv2.weight"].shape[0]


def test_decoder_map_is_128x160_for_228x304():
    model = build_model("fcrn_tiny").eval()
    seen = {}

    def hook(mod, inp, out):
        seen["shape"] = out.shape

    model.head.register_forward_hook(hook)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 228, 304))
    assert seen["shape"][-2:] == (128, 160)
    assert out.shape[-2:] == (228, 304)


@pytest.mark.parametrize("hw", [(5, 7), (8, 10), (1, 1)])
def test_fast_upconv_equals_naive_unpool_and_5x5(hw):
    torch.manual_seed(0)
    naive = NaiveUpConv(3, 4, bias=True).double()
    fast = FastUpConv(3, 4, bias=True).double()
    fast.load_from_5x5(naive.conv.weight, naive.conv.bias)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    diff = (fast(x) - naive(x)).abs().max().item()
    assert fast(x).shape == (2, 4, 2 * hw[0], 2 * hw[1])
    assert diff < 1e-12


def test_fast_model_equals_naive_model():
    torch.manual_seed(0)
    fast, naive = build_model("fcrn_tiny", fast=True).double().eval(), build_model("fcrn_tiny", fast=False).double().eval()
    sd = naive.state_dict()
    fast_sd = {k: v for k, v in sd.items() if ".conv1.conv." not in k and ".proj.conv." not in k}
    fast.load_state_dict(fast_sd, strict=False)
    for name, mod in naive.named_modules():
        if isinstance(mod, NaiveUpConv):
            fast.get_submodule(name).load_from_5x5(mod.conv.weight)
    x = torch.randn(1, 3, 64, 80, dtype=torch.float64)
    assert (fast(x) - naive(x)).abs().max().item() < 1e-10
    # tiny's decoder is narrow, so the gain is smaller than FCRN-ResNet50's 42.7 -> 17.6 GMACs
    assert count_macs(naive, (228, 304)) > 1.3 * count_macs(fast, (228, 304))


@pytest.mark.parametrize("name", ["fcrn_tiny", "fcrn_resnet18"])
def test_fast_and_naive_models_are_the_same_model_at_init(name):
    torch.manual_seed(3)
    fast = build_model(name, fast=True).eval()
    torch.manual_seed(3)
    naive = build_model(name, fast=False).eval()
    for mname, mod in naive.named_modules():
        if isinstance(mod, NaiveUpConv):
            sub = fast.get_submodule(mname)
            for k, (rows, cols) in {"a": (0, 0), "b": (1, 0), "c": (0, 1), "d": (1, 1)}.items():
                # the slices of one Kaiming 5x5 draw, not four draws on the sub-convs' own fans
                assert torch.equal(getattr(sub, k).weight, mod.conv.weight[:, :, rows::2, cols::2]), (mname, k)
            fan_out = mod.conv.weight.shape[0] * 25
            std = torch.cat([getattr(sub, k).weight.flatten() for k in "abcd"]).std().item()
            assert std == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        feats = [m.decoder(m.encoder(x)) for m in (fast, naive)]
        outs = [m(x) for m in (fast, naive)]
    assert torch.allclose(feats[0], feats[1], rtol=1e-4, atol=1e-5 * feats[1].abs().max().item())
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_a_lone_fast_upconv_has_nn_conv2d_s_default_init_of_its_5x5():
    torch.manual_seed(7)
    fast = FastUpConv(6, 5, bias=True)
    torch.manual_seed(7)
    naive = NaiveUpConv(6, 5, bias=True)
    fast_d = fast.d.weight
    assert torch.equal(fast_d, naive.conv.weight[:, :, 1::2, 1::2]) and torch.equal(fast.a.bias, naive.conv.bias)
    x = torch.randn(1, 6, 5, 7)
    assert torch.allclose(fast(x), naive(x), atol=1e-5)


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4, 5)
        self.resize = Resize()

    def forward(self, x):
        y = self.up(self.grouped(self.bn(self.conv(x))))  # 4 x 20 x 24
        y = self.resize(y, (30, 36))
        return self.fc(y.mean(dim=(2, 3)))


def test_mac_counter_against_hand_computed_small_model():
    total, per = count_macs(_Small(), (10, 12), by_layer=True)
    hw = 10 * 12
    expected = {
        "conv": hw * 8 * 3 * 9,  # output elements x in channels x kernel
        "bn": hw * 8,  # one multiply-add per element
        "grouped": hw * 8 * (8 // 4) * 9,
        "up": hw * 8 * 4 * 4,  # transposed: input elements x out channels x kernel (not x stride^2)
        "resize": 4 * 4 * 30 * 36,  # four per output element
        "fc": 4 * 5,
    }
    assert per == expected
    assert total == sum(expected.values())


def test_pretrained_path_loads_a_resnet_state_dict(tmp_path):
    src = build_model("fcrn_tiny")
    sd = {f"module.{k.removeprefix('encoder.')}": v for k, v in src.state_dict().items() if k.startswith("encoder.")}
    sd["fc.weight"] = torch.zeros(10, 128)
    torch.save({"state_dict": sd}, tmp_path / "r.pth")
    model = build_model("fcrn_tiny", weights_backbone=str(tmp_path / "r.pth"))
    assert torch.equal(model.encoder.layer3[0].conv1.weight, src.encoder.layer3[0].conv1.weight)


def test_pretrained_path_of_another_arch_is_refused(tmp_path):
    sd = {k.removeprefix("encoder."): v for k, v in build_model("fcrn_resnet18").state_dict().items() if k.startswith("encoder.")}
    torch.save(sd, tmp_path / "r18.pth")
    with pytest.raises(UserError, match="does not fit fcrn_tiny"):
        build_model("fcrn_tiny", weights_backbone=str(tmp_path / "r18.pth"))


def test_imagenet_offline_names_the_file_and_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as e:
        build_model("fcrn_resnet18", weights_backbone="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "\n" not in msg


def test_imagenet_is_refused_for_tiny():
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_model("fcrn_tiny", weights_backbone="imagenet")


def test_unknown_arch():
    with pytest.raises(UserError, match="not a known model"):
        build_model("fcrn_vgg")
