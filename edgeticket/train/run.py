"""What every training command needs around the loop: the device and torchrun, the output
folder, the prepared data and the sidecar that says what made a run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from edgeticket.data.config import DataConfig
from edgeticket.data.dataset import PreparedData
from edgeticket.data.prepare import resolve_data
from edgeticket.errors import UserError
from edgeticket.fsio import remove_stale_temps, versions
from edgeticket.models.registry import get_record
from edgeticket.runs import claimed, refuse_overlap
from edgeticket.train import distributed as D
from edgeticket.train.config import DEFAULT_DEVICE, DEVICE_HELP, RESUMABLE_CHANGES, TrainConfig  # noqa: F401 - the device option's one home


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device == "cuda" or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        raise UserError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto.")
    return torch.device(device)


def setup_device(device: str | None) -> torch.device:
    """The device this process trains on; under torchrun, join the process group first."""
    dev = resolve_device(device)
    D.init_from_env(str(dev))
    if D.current().enabled and dev.type == "cuda":
        dev = torch.device("cuda", D.current().local_rank)
    return dev


@contextlib.contextmanager
def claim_out(out: str | Path, kind: str, settings: dict, *, resume: bool, overwrite: bool,
              inputs: dict | None = None) -> Iterator[None]:
    """Hold ``--out`` for this run (``runs.claimed``: its kind, identity, lock and inputs).

    Rank 0 claims and holds the lock; every rank learns a refusal, so that all of them stop.
    """
    stack = contextlib.ExitStack()
    error = None
    if D.current().is_main:
        try:
            stack.enter_context(claimed(out, kind, settings, resume=resume, overwrite=overwrite, inputs=inputs))
            if resume:
                remove_stale_temps(out)
        except UserError as e:
            error = str(e)
    if D.current().enabled:
        error = D.broadcast_object(error)
        D.barrier()
    if error is not None:
        raise UserError(error)
    with stack:
        yield


def refuse_out_near_data(out: str | Path, data: str | Path) -> None:
    """Runs and datasets stay apart: no --out inside the data folder, or above it."""
    refuse_overlap(out, {"data folder": data})


def train_identity(train: TrainConfig) -> dict:
    """The training settings that change a run's result (what a resume must keep)."""
    return {k: v for k, v in train.to_dict().items() if k not in RESUMABLE_CHANGES}


def data_identity(data: PreparedData) -> dict:
    return {"cache_key": data.meta.get("key"), "input_size": list(data.input_size)}


def run_meta(arch: str, data: PreparedData, **extra) -> dict:
    """meta.json: enough to rebuild the model and to tell, later, what made it."""
    rec = get_record(arch)
    return {
        "arch": arch,
        "input_size": list(data.input_size),
        "mean": list(rec.mean),
        "std": list(rec.std),
        "output_units": "metres",
        "data": {
            "cache": str(data.root.resolve()),
            "source": data.meta.get("source"),
            "source_sha256": data.meta.get("source_sha256"),
            "cache_key": data.meta.get("key"),
            "split_origin": data.meta.get("split_origin"),
            "val_carve": data.meta.get("val_carve", "frame"),  # caches before the scene carve carved by frame
            "counts": data.meta.get("counts"),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        **extra,
    }


def open_prepared(data: str | Path, cfg: DataConfig, progress: bool = True) -> PreparedData:
    """A dataset folder or a prepared cache -> the cache; rank 0 prepares, the others wait."""
    if D.current().is_main:
        root = resolve_data(data, cfg, progress=progress)
    D.barrier()
    if not D.current().is_main:
        root = resolve_data(data, cfg, progress=False)
    return PreparedData(root)
