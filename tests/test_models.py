"""FCRN builders, the fast up-projection, MAC counting, pretrained loading."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
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
    assert "head.weight" in names and names["head.weight"].shape[0] == 1
    rec = get_record(name)
    if rec.family == "fastdepth":
        # torchvision's MobileNetV2 names under encoder.features, its classifier dropped
        assert "encoder.features.3.conv.1.0.weight" in names and not any("classifier" in n for n in names)
        assert names["decoder.conv1.pw.0.weight"].shape[0] == rec.decoder_widths[0]
        assert names["decoder.conv5.pw.0.weight"].shape[0] == rec.decoder_widths[4]
        return
    assert "encoder.layer1.0.conv1.weight" in names
    assert "encoder.fc.weight" not in names and not any("avgpool" in n for n in names)
    assert names["decoder.conv.weight"].shape[0] == rec.decoder_widths[0]
    assert names["decoder.up4.conv2.weight"].shape[0] == rec.decoder_widths[4]


@pytest.mark.parametrize("name", list_models())
def test_record_macs_match_the_counter(name):
    rec = get_record(name)
    assert len(rec.mean) == 3 and len(rec.std) == 3
    assert rec.input_size == ((224, 224) if rec.family == "fastdepth" else (228, 304))
    model = build_model(name)
    assert count_macs(model, rec.input_size) == rec.macs
    for size, macs in rec.macs_at:
        assert count_macs(model, size) == macs


def _hand_counted_fastdepth_macs(model, size):
    """FastDepth's MACs from the layer shapes alone: each conv's output area, from the strides."""
    import math

    h, w = size
    total = 0
    area = {}  # stride -> output map size, MobileNetV2's padded strides rounding up
    for s in (1, 2, 4, 8, 16, 32):
        area[s] = (math.ceil(h / s), math.ceil(w / s))
    stride = 1
    for block in model.encoder.features:
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                stride *= m.stride[0]
                oh, ow = area[stride]
                total += oh * ow * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, nn.BatchNorm2d):
                total += area[stride][0] * area[stride][1] * m.num_features
    for k, s in enumerate((32, 16, 8, 4, 2)):  # decoder stage k + 1 runs at 1/s, then upsamples
        stage = getattr(model.decoder, f"conv{k + 1}")
        oh, ow = area[s]
        for m in stage.modules():
            if isinstance(m, nn.Conv2d):
                total += oh * ow * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, nn.BatchNorm2d):
                total += oh * ow * m.num_features
    head_hw = 2 * area[2][0] * 2 * area[2][1]
    total += head_hw * model.head.in_channels + 4 * h * w  # the 1x1 head and the bilinear resize
    return total


@pytest.mark.parametrize("size", [(224, 224), (228, 304)])
def test_fastdepth_macs_equal_a_hand_count(size):
    model = build_model("fastdepth_mobilenet_v2")
    assert count_macs(model, size) == _hand_counted_fastdepth_macs(model, size)


def test_fastdepth_is_mobilenet_v2_with_nnconv5_and_additive_skips():
    from torchvision.models import mobilenet_v2

    model = build_model("fastdepth_mobilenet_v2").eval()
    tv = {k: v.shape for k, v in mobilenet_v2().state_dict().items() if not k.startswith("classifier.")}
    ours = {k.removeprefix("encoder."): v.shape for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert ours == tv  # torchvision's names and shapes: its ImageNet weights load by prefix
    for k in range(1, 6):  # depthwise 5x5 then pointwise 1x1 (FastDepth's NNConv5)
        stage = getattr(model.decoder, f"conv{k}")
        assert stage.dw[0].kernel_size == (5, 5) and stage.dw[0].groups == stage.dw[0].in_channels
        assert stage.pw[0].kernel_size == (1, 1)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        s2, s4, s8, s16, top = model.encoder(x)
        assert [t.shape[-1] for t in (s2, s4, s8, s16, top)] == [112, 56, 28, 14, 7]
        d = model.decoder
        y = F.interpolate(d.conv1(top), scale_factor=2.0, mode="nearest")
        for k, skip in ((2, s8), (3, s4), (4, s2)):  # FastDepth's additive skips, after each upsampling
            y = F.interpolate(d.conv2(y) if k == 2 else getattr(d, f"conv{k}")(y), scale_factor=2.0, mode="nearest") + skip
        y = F.interpolate(d.conv5(y), scale_factor=2.0, mode="nearest")
        assert torch.allclose(model(x), model.head(y), atol=1e-6)


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


def test_fastdepth_loads_a_torchvision_mobilenet_v2_state_dict(tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(5)
    sd = mobilenet_v2().state_dict()  # classifier included, as torchvision's ImageNet files hold it
    torch.save(sd, tmp_path / "mnv2.pth")
    model = build_model("fastdepth_mobilenet_v2", weights_backbone=str(tmp_path / "mnv2.pth"))
    for k in ("features.0.0.weight", "features.7.conv.1.0.weight", "features.18.1.running_var"):
        assert torch.equal(model.state_dict()[f"encoder.{k}"], sd[k])


@pytest.mark.parametrize("spec, tag", [("imagenet", "IMAGENET1K_V1"), ("imagenet:v2", "IMAGENET1K_V2")])
def test_fastdepth_imagenet_goes_through_torchvision_s_weights_api(monkeypatch, spec, tag):
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    torch.manual_seed(6)
    sd = mobilenet_v2().state_dict()
    asked = []

    def fake(self, *a, **k):
        asked.append(self)
        return sd

    monkeypatch.setattr(type(MobileNet_V2_Weights.IMAGENET1K_V1), "get_state_dict", fake)
    model = build_model("fastdepth_mobilenet_v2", weights_backbone=spec)
    assert asked == [getattr(MobileNet_V2_Weights, tag)]
    assert torch.equal(model.encoder.features[4].conv[1][0].weight, sd["features.4.conv.1.0.weight"])


def test_imagenet_v2_is_refused_where_torchvision_has_none():
    with pytest.raises(UserError, match="no IMAGENET1K_V2 weights for resnet34"):
        build_model("fcrn_resnet34", weights_backbone="imagenet:v2")
