"""Training throughput of FCRN: images/s and MFU, dense and masked, on random data.

    python benchmarks/train_throughput.py --arch fcrn_resnet50 --batch-size 64 --device cuda --compile
    python benchmarks/train_throughput.py --arch fcrn_resnet50 --batch-size 4 --device cpu --steps 3

It times the trainer's own step (augmentation, autocast, loss, mask on gradients and weights,
optimizer) on data already on the device, the way ``Trainer`` keeps a prepared split. MFU is
model FLOPs (3 x 2 x forward MACs per image) / step time / the device's measured bf16 matmul rate.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from edgeticket.data.augment import AugmentConfig, augment, sample_params
from edgeticket.models import build_model
from edgeticket.models.macs import count_macs
from edgeticket.tickets.criteria.common import prunable_names
from edgeticket.tickets.mask import Mask
from edgeticket.train.config import TrainConfig
from edgeticket.train.losses import berhu
from edgeticket.train.optim import make_optimizer


def matmul_tflops(device: torch.device, dtype=torch.bfloat16, n: int = 8192, reps: int = 20) -> float:
    if device.type != "cuda":
        n, reps, dtype = 2048, 5, torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(arch, batch, size, device, masked, compile_mode, steps, warmup):
    torch.manual_seed(0)
    model = build_model(arch).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig()
    opt = make_optimizer(model, cfg)
    pairs = []
    if masked:
        names = prunable_names(model)
        mask = Mask.ones(model, names)
        g = torch.Generator().manual_seed(0)
        for k in names:
            mask[k] = torch.rand(mask[k].shape, generator=g) > 0.8
        params = dict(model.named_parameters())
        pairs = [(params[k], v.to(device, params[k].dtype)) for k, v in mask.items()]
    net = torch.compile(model, mode=compile_mode) if compile_mode else model
    n_frames = max(batch * 4, 64)
    rgb = torch.randint(0, 255, (n_frames, 3, *size), dtype=torch.uint8, device=device)
    depth = torch.rand(n_frames, 1, *size, device=device) * 9 + 0.5
    gen = torch.Generator().manual_seed(0)
    aug = AugmentConfig()

    def step():
        idx = torch.randint(0, n_frames, (batch,), device=device)
        x, t = augment(rgb.index_select(0, idx), depth.index_select(0, idx), sample_params(batch, aug, gen))
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            pred = net(x)
        loss = berhu(pred.float(), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if pairs:
            torch._foreach_mul_([p.grad for p, _ in pairs], [m for _, m in pairs])
        opt.step()
        if pairs:
            with torch.no_grad():
                torch._foreach_mul_([p for p, _ in pairs], [m for _, m in pairs])

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    return {"masked": masked, "batch": batch, "step_ms": dt * 1000, "images_per_s": batch / dt,
            "warmup_s": t_warm, "compile": compile_mode or "off"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="fcrn_resnet50")
    ap.add_argument("--size", default="228x304")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[64])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", nargs="?", const="default", default=None, help="torch.compile mode")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    device = torch.device(a.device)
    size = tuple(int(v) for v in a.size.split("x"))
    macs = count_macs(build_model(a.arch), size)
    peak = matmul_tflops(device)
    rows = []
    for bs in a.batch_size:
        for masked in (False, True):
            r = run(a.arch, bs, size, device, masked, a.compile, a.steps, a.warmup)
            r["mfu"] = 6 * macs * r["images_per_s"] / (peak * 1e12)
            rows.append(r)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(json.dumps({"arch": a.arch, "size": a.size, "device": name, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "fwd_gmacs": macs / 1e9,
                      "matmul_tflops": peak, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
