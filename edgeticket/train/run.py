"""What every training command needs around the loop: the device and torchrun, the output
folder, the prepared data and the sidecar that says what made a run."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from edgeticket.data.config import DataConfig
from edgeticket.data.dataset import PreparedData
from edgeticket.data.prepare import resolve_data
from edgeticket.errors import UserError
from edgeticket.fsio import dir_is_nonempty, remove_stale_temps, versions
from edgeticket.models.registry import get_record
from edgeticket.train import distributed as D
from edgeticket.train.config import DEFAULT_DEVICE, DEVICE_HELP  # noqa: F401 - the device option's one home


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


def check_out_dir(out: Path, resume: bool, overwrite: bool, data: str | Path | None = None) -> None:
    """Refuse a non-empty ``--out`` unless resuming or overwriting; ``--overwrite`` clears it.

    An ``--out`` inside the data folder is refused too: runs and datasets stay apart.
    """
    out = Path(out)
    if data is not None:
        refuse_out_near_data(out, data)
    # Rank 0 decides and acts; every rank then meets at the same barrier.
    action = _out_dir_action(out, resume, overwrite) if D.current().is_main else None
    action = D.broadcast_object(action)
    D.barrier()
    if action and action.startswith("error:"):
        raise UserError(action.removeprefix("error:"))


def refuse_out_near_data(out: str | Path, data: str | Path) -> None:
    """Runs and datasets stay apart: no --out inside the data folder, or above it."""
    d, o = Path(data).resolve(), Path(out).resolve()
    if o == d or d in o.parents:
        raise UserError(f"--out {out}: is inside the data folder {data}; choose a folder outside it.")
    if o in d.parents:
        raise UserError(f"--out {out}: holds the data {data}; choose an --out beside the data, not above it.")


def _out_dir_action(out: Path, resume: bool, overwrite: bool) -> str:
    if not dir_is_nonempty(out):
        return "fresh"
    if resume:
        remove_stale_temps(out)
        return "resume"
    if not overwrite:
        return f"error:--out {out}: is not empty; pass --resume to continue that run or --overwrite to replace it."
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return "overwritten"


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
