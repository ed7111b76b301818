"""A byte-identical copy of the baseline, benched N times: is it at 1.00x, and does its interval hold 1?

Trains and exports the test suite's fcrn_tiny once (under ROOT), copies the ONNX file, then times
both N times as the bench does (``session_pools`` + ``interleaved``, 20 rounds x 10 runs, 1 thread)
and prints each speed-up with its two-stage bootstrap interval.

    python benchmarks/copy_at_one.py N OUT.pkl [ROOT]
"""
import pickle
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import SIZE, tiny_finetune_config, tiny_train_config

from edgeticket import paths
from edgeticket.bench.api import session_pools
from edgeticket.bench.config import BenchConfig
from edgeticket.bench.evaluate import open_model
from edgeticket.bench.latency import interleaved, speedup_with_interval
from edgeticket.data.synth import write_synthetic
from edgeticket.export.api import export
from edgeticket.train.finetune import finetune


def main():
    root = Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/copy_at_one")
    if not (root / "e_dense" / paths.ONNX).exists():
        write_synthetic(root / "synth", 24, seed=0, progress=False, workers=2)
        finetune(root / "synth", root / "dense", tiny_finetune_config(tiny_train_config(epochs=2), input_size=SIZE, val_fraction=0.15), progress=False)
        export(root / "dense", root / "e_dense", progress=False)
        (root / "copy").mkdir(exist_ok=True)
        shutil.copy(root / "e_dense" / paths.ONNX, root / "copy" / paths.ONNX)
    res = []
    for trial in range(int(sys.argv[1])):
        cfg = BenchConfig(runs=200, rounds=20, warmup=10, batch_size=1, threads=1)
        ms = [open_model(str(root / "e_dense" / paths.ONNX), cfg), open_model(str(root / "copy" / paths.ONNX), cfg)]
        pools = session_pools(ms, cfg)
        t = interleaved([(p, m.pre.input_size) for p, m in zip(pools, ms, strict=True)], 1, 20, 200, 10)
        res.append(t)
        point, ci = speedup_with_interval(t[0], t[1], sessions=len(pools[0]))
        print(f"{trial} {point:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]", flush=True)
    pickle.dump(res, open(sys.argv[2], "wb"))

if __name__ == "__main__":
    main()
