"""Files: atomic writes, JSON, hashes and provenance.

Every artifact is written to a temporary file in the same folder and renamed over the final
name, so a killed process never leaves a half-written file that looks whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import platform
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeticket import __version__, faults
from edgeticket.errors import UserError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open() would give; mkstemp's files are 0600


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _disk_error(path.parent, e) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        faults.point("write")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise _disk_error(path.parent, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _disk_error(folder: Path, e: OSError) -> BaseException:
    """A full, read-only or size-limited disk: one sentence naming the folder (the old file stays)."""
    from edgeticket.runs import disk_error, is_disk_error

    return disk_error(folder, e) if is_disk_error(e) else e


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _jsonl_line(obj: Any) -> str:
    return json.dumps(obj, default=_json_default) + "\n"


def write_jsonl(path: str | os.PathLike, rows: list[Any]) -> None:
    write_text(path, "".join(_jsonl_line(r) for r in rows))


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one line; a torn last line is tolerated by ``read_jsonl``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_jsonl_line(obj))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file, so a kill never leaves a partial checkpoint."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_remembered(paths: list[Path], store: Path) -> dict[Path, str]:
    """sha256 of each file, remembered in the JSON ``store`` by (size, mtime), so a 2.8 GB
    dataset is read once, not by every command that needs its hash."""
    try:
        known = json.loads(Path(store).read_text())
    except (OSError, ValueError):
        known = {}
    out, changed = {}, False
    for p in map(Path, paths):
        st, key = p.stat(), str(p.resolve())
        rec = known.get(key)
        if isinstance(rec, dict) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            out[p] = rec["sha256"]
            continue
        out[p] = sha256_file(p)
        known[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": out[p]}
        changed = True
    parent = Path(store).parent
    if changed and os.access(parent if parent.exists() else parent.parent, os.W_OK):
        write_json(store, known)
    return out


def short_hash(*parts: str, n: int = 10) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:n]


def versions() -> dict[str, str]:
    """Versions of the code that made an artifact, for its sidecar."""
    out = {"edgeticket": __version__, "python": platform.python_version()}
    for mod in ("torch", "torchvision", "onnx", "onnxruntime", "torch_pruning", "numpy"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing optional package is simply not listed
            pass
    return out


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temporary files a killed process left behind (never a finished artifact)."""
    n = 0
    for p in Path(folder).rglob(".*.tmp"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def dir_is_nonempty(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.iterdir())


def load_torch(path: str | os.PathLike, allow_pickle: bool = False, what: str = "file",
               pickle_hint: str = "this command reads only plain tensors: if you trust the file, load it in Python and "
                                  "re-save its tensors with torch.save(state_dict, path)"):
    """``torch.load(weights_only=True)``; a file that needs pickle is refused unless allowed."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what} file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        if allow_pickle:
            raise UserError(f"{path}: cannot be read ({str(e).splitlines()[0]}).") from None
        raise UserError(
            f"{path}: needs pickle to load, which can run code; {pickle_hint}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable PyTorch {what} ({msg}); it may be truncated.") from None
