"""What --distill does for a ticket on the synthetic rooms: seeds x (without, with), val δ1 mean ± std.

    python benchmarks/distill_effect.py --out /tmp/bm/kd --arch fcrn_tiny --size 96x128 --frames 120 \
        --dense-epochs 8 --ticket-epochs 4 --seeds 0,1,2

A dense model is trained from a random init (no ImageNet weights here). Its trained weights give
a one-shot channel ticket (every prunable group keeps ``--keep`` of its channels by L1 norm, as
the channel criterion ranks them). The ticket is then fine-tuned from the dense weights, masked,
once per seed without and once with ``--distill DENSE`` (weight ``--weight``); the seed sets the
batch order and the augmentation, the start is the same. Every run is scored on the same
validation frames (the split seed is fixed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from edgeticket import paths
from edgeticket.data.config import DataConfig
from edgeticket.data.prepare import prepare
from edgeticket.data.synth import write_synthetic
from edgeticket.fsio import write_json
from edgeticket.hparams import InputSize
from edgeticket.models.config import ModelConfig
from edgeticket.models.store import load_model_dir
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.criteria.channel import prune_channels
from edgeticket.tickets.groups import channel_groups, prunable_groups
from edgeticket.tickets.mask import Mask
from edgeticket.train.config import FinetuneConfig, TrainConfig
from edgeticket.train.finetune import finetune


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-distill")
    ap.add_argument("--arch", default="fcrn_tiny")
    ap.add_argument("--size", default="96x128")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--dense-epochs", type=int, default=8)
    ap.add_argument("--ticket-epochs", type=int, default=4)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    out = Path(a.out)
    size = InputSize.parse(a.size)
    data_cfg = DataConfig(input_size=size, val_fraction=0.2)
    synth = out / "synth"
    if not (synth / paths.LABELED).exists():
        write_synthetic(synth, a.frames, seed=0, progress=False, workers=2)
    cache = prepare(synth, out / "cache", data_cfg, progress=False)
    base = dict(batch_size=8, optimizer="adamw", lr=1e-3, decoder_lr_mult=1.0, warmup_epochs=0.0, eval_batch_size=16)
    model_cfg = ModelConfig(arch=a.arch, pretrained="none")
    dense_dir = out / "dense"
    dense = finetune(cache, dense_dir, FinetuneConfig(model=model_cfg, data=data_cfg,
                                                      train=TrainConfig(epochs=a.dense_epochs, **base)),
                     overwrite=True, progress=False)
    model, _ = load_model_dir(dense_dir)
    scope = C.prunable_names(model)
    groups = prunable_groups(channel_groups(model), set(scope))
    mask = prune_channels(dict(model.named_parameters()), C.with_bn_entries(Mask.ones(model, scope), groups), groups,
                          a.keep, round_to=8).mask
    mask.save(out / "ticket_mask.pt")
    mask = Mask.load(out / "ticket_mask.pt")
    runs = {"without": [], "with": []}
    for seed in [int(s) for s in a.seeds.split(",")]:
        for arm, teacher in (("without", ""), ("with", str(dense_dir))):
            train = TrainConfig(epochs=a.ticket_epochs, seed=seed, distill=teacher, distill_weight=a.weight, **base)
            res = finetune(cache, out / f"ticket_{arm}_s{seed}", FinetuneConfig(model=model_cfg, data=data_cfg, train=train),
                           mask=mask, init_from=dense_dir, overwrite=True, progress=False)
            runs[arm].append({"seed": seed, "val_delta1": res.val["delta1"], "val_rmse": res.val["rmse"],
                              "test_delta1": res.test.get("delta1")})
            print(json.dumps({"arm": arm, **runs[arm][-1]}), flush=True)
    summary = {"arch": a.arch, "size": a.size, "frames": a.frames, "keep": a.keep, "weight": a.weight,
               "dense_val_delta1": dense.val["delta1"], "runs": runs}
    for arm, rows in runs.items():
        d1 = [r["val_delta1"] for r in rows]
        summary[f"{arm}_val_delta1_mean"] = statistics.fmean(d1)
        summary[f"{arm}_val_delta1_std"] = statistics.stdev(d1) if len(d1) > 1 else 0.0
    write_json(out / "distill_effect.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
