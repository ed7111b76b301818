"""The training cache: one HDF5 file per split, chunked per frame.

``CACHE/{train,val,test}.h5`` hold ``rgb`` (N,h,w,3) uint8 and ``depth`` (N,h,w) float32 at
the input size, and ``frame`` (N,) the source frame ids. val and test also hold
``depth_full`` (N,480,640) float32 metres, so fine-tuning scores metrics on exactly the ground
truth the bench reads. That is 1.23 MB a frame (803 MB for NYU's 654 test frames); uint16
millimetres would halve it but round the depth the metrics see, and lzf compression saved
under 1% on the synthetic rooms, so neither is used. ``cache.json`` is written last and marks a finished cache.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgeticket import paths
from edgeticket.data.config import DataConfig
from edgeticket.data.geometry import DEFAULT_INPUT_SIZE, resize_depth, resize_rgb
from edgeticket.data.nyu import FRAME_H, FRAME_W, open_with_split
from edgeticket.errors import UserError
from edgeticket.fsio import read_json, sha256_remembered, short_hash, versions, write_json
from edgeticket.hparams import InputSize
from edgeticket.runs import claimed

CACHE_META = paths.CACHE_META
CACHE_DIRNAME = paths.CACHE_DIRNAME
SPLITS = ("train", "val", "test")
VALID_DEPTH = (1e-3, 10.0)  # metres: the pixels the metrics score (DESIGN.md, Data)
CACHE_FORMAT = 1


def is_cache(path: Path) -> bool:
    return (Path(path) / CACHE_META).is_file()


def hash_store(folder: Path) -> Path:
    """Where a data folder's remembered file hashes live (shared by fetch and prepare)."""
    return Path(folder) / CACHE_DIRNAME / paths.HASHES


def source_hashes(files: list[Path]) -> dict[str, str]:
    """sha256 of the source files and of the folder's own splits.mat (it decides the split)."""
    files = list(files)
    if not files:
        return {}
    split = files[0].parent / paths.SPLITS_MAT
    if split.exists() and split not in files:
        files.append(split)
    return {p.name: h for p, h in sha256_remembered(files, hash_store(files[0].parent)).items()}


def cache_key(input_size: InputSize, hashes: dict[str, str], val_fraction: float, seed: int, carve: str = "auto") -> str:
    parts = [f"{k}={v}" for k, v in sorted(hashes.items())] + [f"val={val_fraction}", f"seed={seed}",
                                                                 f"carve={carve}", f"v{CACHE_FORMAT}"]
    return f"{InputSize(*input_size)}-{short_hash(*parts)}"


def prepare(
    src: str | Path,
    out: str | Path,
    config: DataConfig | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    _hashes: dict[str, str] | None = None,
) -> Path:
    """Convert a dataset folder (official .mat or nyu2 PNGs) into a training cache at ``out``.

    ``config.input_size`` defaults to 228x304; the validation carve is ``config.val_fraction``
    of the train frames, drawn with ``config.split_seed``, by whole scenes where the data names
    them (``config.val_carve``); ``cache.json``'s ``val_carve`` says which carve was used.
    """
    cfg = config or DataConfig()
    input_size = cfg.input_size or DEFAULT_INPUT_SIZE
    src, out = Path(src), Path(out)
    source, split = open_with_split(src, cfg.val_fraction, cfg.split_seed, cfg.val_carve)
    try:
        return _prepare_open(source, split, src, out, input_size, cfg, progress, overwrite, _hashes)
    finally:
        source.close()


def _prepare_open(source, split, src: Path, out: Path, input_size, cfg: DataConfig, progress, overwrite, _hashes):
    _refuse_out_inside(src, out)
    hashes = _hashes or source_hashes(source.source_files())
    key = cache_key(input_size, hashes, cfg.val_fraction, cfg.split_seed, cfg.val_carve)
    if is_cache(out) and read_json(out / CACHE_META).get("key") == key:
        return out
    # the split files are staged beside their final names and cache.json, the manifest, is written last
    with claimed(out, "cache", {"key": key}, overwrite=overwrite, resume_option=None, stage=True) as claim:
        return _write_cache(source, split, src, out, input_size, cfg, progress, hashes, key, claim)


def _write_cache(source, split, src: Path, out: Path, input_size, cfg: DataConfig, progress, hashes, key, claim):
    val_fraction, seed = cfg.val_fraction, cfg.split_seed
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    counts = {}
    staged = []
    try:  # every split is written in full before any of them replaces what --out held
        for name in SPLITS:
            idx = split.indices(name)
            counts[name] = int(len(idx))
            tmp = out / f".{paths.cache_split(name)}.tmp"
            staged.append((tmp, out / paths.cache_split(name)))
            _write_split(tmp, source, idx, input_size, full=name != "train", progress=progress, label=name)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()
        raise
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "input_size": list(input_size),
        "source": str(src.resolve()),
        "source_kind": source.kind,
        "source_sha256": hashes,
        "split_origin": split.origin,
        "val_fraction": val_fraction,
        "seed": seed,
        "val_carve": split.val_carve,
        **_scene_counts(source, split),
        "counts": counts,
        "depth_full": "float32 metres, uncompressed (1.23 MB a frame)",
        "seconds": round(time.perf_counter() - t0, 2),
        "versions": versions(),
    }
    (out / CACHE_META).unlink(missing_ok=True)
    claim.mark()
    for tmp, final in staged:
        os.replace(tmp, final)
    write_json(out / CACHE_META, meta)
    return out


def _scene_counts(source, split) -> dict:
    """{"scenes": {split: distinct scenes}} for a scene carve (what it held out, in scenes)."""
    if split.val_carve != "scene":
        return {}
    names = source.scene_names()
    return {"scenes": {name: len({names[i] for i in split.indices(name)}) for name in SPLITS}}


def _write_split(path: Path, source, idx: np.ndarray, size, full: bool, progress: bool, label: str) -> None:
    import h5py

    from edgeticket.progress import track

    h, w = size
    n = len(idx)
    with h5py.File(path, "w") as f:
        rgb = f.create_dataset("rgb", (n, h, w, 3), np.uint8, chunks=(1, h, w, 3) if n else None)
        depth = f.create_dataset("depth", (n, h, w), np.float32, chunks=(1, h, w) if n else None)
        frame = f.create_dataset("frame", (n,), np.int64)
        dfull = None
        if full:
            dfull = f.create_dataset(
                "depth_full", (n, FRAME_H, FRAME_W), np.float32,
                chunks=(1, FRAME_H, FRAME_W) if n else None,
            )
        valid = 0
        for j, i in enumerate(track(idx, f"prepare {label}", total=n, enabled=progress)):
            r, d = source.read(int(i))
            if r.shape[:2] != (FRAME_H, FRAME_W):
                raise UserError(f"{source_name(source)}: frame {int(i)} is {r.shape[:2]}, expected {FRAME_H}x{FRAME_W}.")
            rgb[j] = resize_rgb(r, size)
            depth[j] = resize_depth(d, size)
            frame[j] = source.frame_id(int(i))
            valid += int(np.count_nonzero((d > VALID_DEPTH[0]) & (d <= VALID_DEPTH[1])))
            if dfull is not None:
                dfull[j] = d
        if n and not valid:
            raise UserError(f"{source_name(source)}: no {label} frame has a valid depth pixel ({VALID_DEPTH[0]:g} < "
                            f"depth <= {VALID_DEPTH[1]:g} m), so nothing could be learnt or scored; is the depth "
                            "missing, or not in metres?")
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _refuse_out_inside(src: Path, out: Path) -> None:
    src_dir = (src if src.is_dir() else src.parent).resolve()
    o = out.resolve()
    if (o == src_dir or src_dir in o.parents) and CACHE_DIRNAME not in o.relative_to(src_dir).parts:
        raise UserError(f"--out {out}: is inside the data folder {src_dir}; choose a folder outside it.")


def source_name(source) -> str:
    return str(getattr(source, "path", getattr(source, "folder", source)))


def effective_input_size(path: str | Path, config: DataConfig) -> InputSize:
    """The input size a run on ``path`` will have: the config's, else a cache's own, else 228x304."""
    if config.input_size is not None:
        return config.input_size
    if is_cache(Path(path)):
        return InputSize(*read_json(Path(path) / CACHE_META)["input_size"])
    return DEFAULT_INPUT_SIZE


def resolve_data(path: str | Path, config: DataConfig | None = None, *, progress: bool = True) -> Path:
    """Return a prepared cache for ``path``: the cache itself, or ``DIR/.edgeticket-cache/<H>x<W>-<hash>/``.

    ``config.input_size`` None means the data's: a cache's own size, 228x304 for a dataset folder.
    """
    cfg = config or DataConfig()
    path = Path(path)
    if not path.exists():
        raise UserError(f"--data {path}: no such file or folder.")
    if is_cache(path):
        meta = read_json(path / CACHE_META)
        if cfg.input_size is not None and tuple(meta["input_size"]) != tuple(cfg.input_size):
            raise UserError(
                f"--data {path}: this cache is {InputSize(*meta['input_size'])}, not {cfg.input_size}; "
                "pass the dataset folder or a cache of that size (or leave --input-size out)."
            )
        return path
    size = cfg.input_size or DEFAULT_INPUT_SIZE
    # the split is checked here and carved in prepare: the frame carve reads no scene names
    source, _ = open_with_split(path, cfg.val_fraction, cfg.split_seed, "frame")
    hashes = source_hashes(source.source_files())
    source.close()
    folder = path if path.is_dir() else path.parent
    if not os.access(folder, os.W_OK):
        raise UserError(f"--data {path}: the folder is read-only, so its cache cannot be written beside it; run "
                        f"`edgeticket data prepare {path} --out CACHE` and pass --data CACHE.")
    out = folder / CACHE_DIRNAME / cache_key(size, hashes, cfg.val_fraction, cfg.split_seed, cfg.val_carve)
    with _lock(out.parent):  # one prepare at a time per data folder
        if is_cache(out):
            return out
        if out.exists():
            shutil.rmtree(out)  # an interrupted earlier prepare: its files are incomplete by definition
        return prepare(path, out, cfg.replace(input_size=size), progress=progress, _hashes=hashes)


@contextlib.contextmanager
def _lock(folder: Path):
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / paths.LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
