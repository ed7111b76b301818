"""Run folders: what a folder holds, who is writing it, and artifacts committed as one unit.

- **Kind and identity.** Every folder a command writes carries a marker (``paths.RUN_MARKER``)
  with its kind (``KINDS``), the settings that made it and their hash (the identity). A command
  writes only into an empty folder, a folder of its own kind with ``--resume`` and the same
  identity, or, with ``--overwrite``, a folder of its own kind; anything else is refused with a
  sentence naming what the folder holds. Folders written before markers existed are recognised
  by their files (``legacy_kind``).
- **One writer per folder.** ``FolderLock`` holds an advisory ``fcntl.flock`` on a lock file
  beside the folder for the command's life; a second command on the same folder is refused,
  naming the first one's pid. The lock lives beside the folder, not in it, so that a folder can
  be swapped whole.
- **One unit.** ``staged(out)`` yields a staging folder beside ``out``; on success the whole
  folder is swapped in with two renames (``out`` -> ``.out.old-*``, staging -> ``out``). A
  reader sees the old set, the new set, or (for a moment, or after a kill between the renames)
  no folder; never a mix. ``recover(out)`` finishes or undoes an interrupted swap and removes
  the leftovers; the next command on the folder calls it first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeticket import __version__, paths
from edgeticket.errors import UserError
from edgeticket.fsio import short_hash, write_json

KINDS = {
    "dataset": "a dataset",
    "cache": "a training cache",
    "finetune": "a fine-tuned model",
    "search": "an IMP search",
    "level": "a level of an IMP search",
    "branch": "a baseline branch of an IMP search",
    "ticket": "an imported ticket",
    "export": "an ONNX export",
    "bench": "a bench report",
    "pipeline": "a pipeline run",
}
_STAGING, _OLD = ".staging-", ".old-"


@dataclass
class FolderInfo:
    kind: str | None  # None: files no edgeticket command wrote
    identity: str = ""
    settings: dict = field(default_factory=dict)
    legacy: bool = False  # recognised by its files, written before markers existed

    def describe(self) -> str:
        return KINDS.get(self.kind or "", "files that no edgeticket command wrote")


def identity_of(settings: Mapping[str, Any]) -> str:
    return short_hash(json.dumps(settings, sort_keys=True, default=str), n=16)


def write_marker(folder: str | Path, kind: str, settings: Mapping[str, Any]) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown run folder kind {kind!r}")
    write_json(Path(folder) / paths.RUN_MARKER, {"kind": kind, "identity": identity_of(settings),
                                                 "settings": dict(settings), "edgeticket": __version__,
                                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def legacy_kind(folder: Path) -> str | None:
    """The kind of a folder an older edgeticket wrote, from its files."""
    names = {p.name for p in folder.iterdir()}
    if paths.PIPELINE_STATE in names:
        return "pipeline"
    if paths.SEARCH in names:
        return "search"
    if paths.REPORT_JSON in names:
        return "bench"
    if paths.EXPORT_JSON in names or paths.ONNX in names:
        return "export"
    if paths.CACHE_META in names:
        return "cache"
    if paths.LABELED in names or paths.SPLITS_MAT in names:
        return "dataset"
    if paths.SPARSITY in names and paths.META in names:
        return "branch" if folder.name.startswith("branch_") else "level"
    if paths.META in names or paths.LAST in names or paths.MODEL in names:
        return "finetune"
    if paths.MASK in names:
        return "ticket"
    return None


def _own_entries(folder: Path) -> list[Path]:
    """What a folder holds, less the leftovers a killed command may leave (temps)."""
    return [p for p in folder.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]


def folder_info(folder: str | Path) -> FolderInfo | None:
    """What ``folder`` holds; None when it is missing or empty."""
    folder = Path(folder)
    if not folder.is_dir() or not _own_entries(folder):
        return None
    marker = folder / paths.RUN_MARKER
    if [p.name for p in _own_entries(folder)] == [paths.RUN_MARKER]:
        return None  # claimed, and killed before anything was written: as good as empty
    if marker.is_file():
        try:
            d = json.loads(marker.read_text())
            return FolderInfo(d.get("kind"), d.get("identity", ""), d.get("settings", {}))
        except (OSError, ValueError):
            return FolderInfo(None)
    kind = legacy_kind(folder)
    return FolderInfo(kind, legacy=kind is not None)


def changed_keys(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def claim_action(out: Path, kind: str, settings: Mapping[str, Any], *, resume: bool, overwrite: bool,
                 option: str = "--out", resume_option: str | None = "--resume",
                 overwrite_option: str | None = "--overwrite") -> str:
    """'fresh', 'resume' or 'overwrite' for a command of ``kind`` writing into ``out``; refuses the rest.

    A command without a resume option (``resume_option=None``: it redoes its work whole, as
    ``data synth`` and ``export`` do) may rerun into a folder of its own kind and the same
    identity, so that a rerun after a kill needs no ``--overwrite``. Advice names only the
    options the command has (``overwrite_option=None``: it has no ``--overwrite``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: is a file; pass a folder.")
    info = folder_info(out)
    if info is None:
        return "fresh"
    what = f"{option} {out}: holds {info.describe()}"
    if info.kind != kind:
        raise UserError(f"{what}, not {KINDS[kind]}; choose another {option}.")
    # a folder without an identity (an older edgeticket's) may be resumed, never silently redone
    same = info.identity == identity_of(settings) if info.identity else (resume or resume_option is not None)
    diff = changed_keys(info.settings, dict(settings)) if info.identity else []
    made = f" made with other settings ({', '.join(diff[:6]) or 'its inputs'})" if diff else ""
    if resume or (resume_option is None and same and not overwrite):
        if not same:
            again = f", or start over with {overwrite_option}" if overwrite_option else f", or choose another {option}"
            raise UserError(f"{what}{made}; resume with the same settings{again}.")
        return "resume"
    if overwrite:
        return "overwrite"
    if resume_option and same:
        again = f" or {overwrite_option} to replace it" if overwrite_option else ""
        raise UserError(f"{what}; pass {resume_option} to continue it{again}.")
    again = f"pass {overwrite_option} to replace it or " if overwrite_option else ""
    raise UserError(f"{what}{made}; {again}choose another {option}.")


def refuse_overlap(out: str | Path, inputs: Mapping[str, str | Path | None], option: str = "--out") -> None:
    """``out`` must not be, lie inside, or contain any input (data, source run, teacher, ...)."""
    o = Path(out).resolve()
    for label, p in inputs.items():
        if p is None:
            continue
        i = Path(p).resolve()
        if o == i:
            raise UserError(f"{option} {out}: is the {label} {p}; write the output somewhere else.")
        if i in o.parents:
            raise UserError(f"{option} {out}: is inside the {label} {p}; choose a folder outside it.")
        if o in i.parents:
            raise UserError(f"{option} {out}: holds the {label} {p}; choose an {option} beside it, not above it.")


@dataclass
class Claim:
    """A folder a command may write: its kind, the settings that make its identity, and why."""

    out: Path
    kind: str
    settings: dict
    action: str  # fresh | resume | overwrite

    def mark(self, folder: str | Path | None = None) -> None:
        """Write the folder's marker (into ``folder``: a staging folder about to become ``out``)."""
        write_marker(folder or self.out, self.kind, self.settings)


@contextlib.contextmanager
def claimed(out: str | Path, kind: str, settings: Mapping[str, Any] | None = None, *, resume: bool = False,
            overwrite: bool = False, inputs: Mapping[str, str | Path | None] | None = None, option: str = "--out",
            resume_option: str | None = "--resume", overwrite_option: str | None = "--overwrite",
            stage: bool = False) -> Iterator[Claim]:
    """Hold ``out`` for a command of ``kind`` for as long as the block runs.

    In order: ``out`` is not a file and overlaps no input; the lock is taken (a second writer is
    refused); an interrupted swap is finished or undone; the folder's kind and identity allow
    the write (``claim_action``). Then, unless the command ``stage``s its output (and writes the
    marker into the staging folder itself), ``--overwrite`` clears the folder and the marker is
    written. A block that fails on a folder it found empty leaves it as it found it.
    """
    out = Path(out)
    settings = dict(settings or {})
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: is a file; pass a folder.")
    refuse_overlap(out, inputs or {}, option)
    with FolderLock(out, option):
        recover(out)
        action = claim_action(out, kind, settings, resume=resume, overwrite=overwrite, option=option,
                              resume_option=resume_option, overwrite_option=overwrite_option)
        created = not out.exists()
        claim = Claim(out, kind, settings, action)
        if not stage:
            try:
                if action == "overwrite":
                    clear(out)
                out.mkdir(parents=True, exist_ok=True)
                if action != "resume" or not (out / paths.RUN_MARKER).is_file():  # a resume keeps its marker
                    claim.mark()
            except OSError as e:
                if is_disk_error(e):
                    raise disk_error(out, e) from None
                raise
        try:
            yield claim
        except BaseException:
            if action != "resume" and not stage:
                _undo_empty(out, created)
            raise


def _undo_empty(out: Path, created: bool) -> None:
    """A claimed folder that got nothing but its marker goes back to how it was found."""
    try:
        if {p.name for p in _own_entries(out)} <= {paths.RUN_MARKER}:
            (out / paths.RUN_MARKER).unlink(missing_ok=True)
            if created and not any(out.iterdir()):
                out.rmdir()
    except OSError:
        pass


def clear(out: Path) -> None:
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# -- one writer per folder ---------------------------------------------------------------------

def lock_path(out: str | Path) -> Path:
    out = Path(out).resolve()
    return out.parent / f".{out.name}{paths.LOCK_SUFFIX}"


class FolderLock:
    """An advisory lock on a folder for as long as a command writes it (not across machines)."""

    def __init__(self, out: str | Path, option: str = "--out"):
        self.out, self.option, self._fh = Path(out), option, None

    def __enter__(self) -> FolderLock:
        path = lock_path(self.out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
        except OSError as e:
            raise disk_error(path.parent, e) from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise UserError(f"{self.option} {self.out}: another edgeticket command is writing it (pid {holder}); wait "
                            f"for it to finish, or choose another {self.option}.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# -- artifacts as one unit ---------------------------------------------------------------------

def recover(out: str | Path) -> str:
    """Finish or undo an interrupted ``staged`` swap of ``out``; remove the leftovers.

    A staging folder with its commit mark is a complete new set: when ``out`` is gone (killed
    between the two renames) it becomes ``out``. Otherwise the old set stands.
    """
    out = Path(out).resolve()
    if not out.parent.is_dir():
        return "nothing"
    done = "nothing"
    stagings = sorted(out.parent.glob(f".{out.name}{_STAGING}*"))
    olds = sorted(out.parent.glob(f".{out.name}{_OLD}*"))
    if not out.exists():
        complete = [s for s in stagings if (s / paths.COMMIT_MARK).exists()]
        if complete:
            os.replace(complete[-1], out)
            (out / paths.COMMIT_MARK).unlink(missing_ok=True)
            stagings.remove(complete[-1])
            done = "finished"
        elif olds:
            os.replace(olds[-1], out)
            olds.remove(olds[-1])
            done = "undone"
    for p in stagings + olds:
        shutil.rmtree(p, ignore_errors=True)
        done = done if done != "nothing" else "cleaned"
    return done


@contextlib.contextmanager
def staged(out: str | Path) -> Iterator[Path]:
    """Yield a new, empty staging folder; on success swap it in as ``out`` whole."""
    out = Path(out).resolve()
    recover(out)
    stage = out.parent / f".{out.name}{_STAGING}{uuid.uuid4().hex[:12]}"
    stage.mkdir(parents=True)
    try:
        yield stage
        (stage / paths.COMMIT_MARK).write_text("")  # from here on, recover() rolls forward
        old = out.parent / f".{out.name}{_OLD}{uuid.uuid4().hex[:12]}"
        if out.exists():
            os.replace(out, old)
        from edgeticket import faults

        faults.point("swap")
        os.replace(stage, out)
        (out / paths.COMMIT_MARK).unlink()
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if stage.exists() and not (stage / paths.COMMIT_MARK).exists():
            shutil.rmtree(stage, ignore_errors=True)
        raise


# -- disks -------------------------------------------------------------------------------------

_DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                errno.EROFS: "the file system is read-only", errno.EFBIG: "a file would exceed the file-size limit",
                errno.EACCES: "it is not writable", errno.EPERM: "it is not writable"}


def disk_error(folder: str | Path, e: OSError) -> UserError:
    """One sentence for a write that the disk refused."""
    why = _DISK_ERRORS.get(e.errno, e.strerror or type(e).__name__)
    return UserError(f"{folder}: cannot write there: {why}; nothing already written was replaced. "
                     "Free space or choose another folder, then rerun.")


def is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _DISK_ERRORS
