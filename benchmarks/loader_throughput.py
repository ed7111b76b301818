"""Training-loader throughput: batches gathered from a prepared cache and augmented, on the CPU.

    python benchmarks/loader_throughput.py --data runs/demo/data/synth --input-size 228x304 --batch-size 16

Loading is never training's bottleneck when this is far above the model's training img/s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from edgeticket.data.augment import AugmentConfig, augment, sample_params
from edgeticket.data.config import DataConfig
from edgeticket.data.dataset import PreparedData
from edgeticket.data.prepare import resolve_data
from edgeticket.hparams import InputSize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--input-size", default="228x304")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    t0 = time.perf_counter()
    data = PreparedData(resolve_data(a.data, DataConfig(input_size=InputSize.parse(a.input_size))))
    t_prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    train = data.load("train").to(a.device)
    t_load = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    cfg = AugmentConfig()
    out = {}
    for label, aug in (("gather", False), ("gather+augment", True)):
        t0 = time.perf_counter()
        for _ in range(a.batches):
            idx = torch.randint(0, len(train), (a.batch_size,), generator=g).to(a.device)
            rgb, depth = train.rgb.index_select(0, idx), train.depth.index_select(0, idx)
            if aug:
                x, d = augment(rgb, depth, sample_params(a.batch_size, cfg, g))
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out[label] = round(a.batches * a.batch_size / dt, 1)
    print(json.dumps({"data": a.data, "input_size": a.input_size, "frames": len(train), "device": a.device,
                      "threads": torch.get_num_threads(), "prepare_or_lookup_s": round(t_prepare, 2),
                      "load_split_s": round(t_load, 3), "images_per_s": out}, indent=2))


if __name__ == "__main__":
    main()
