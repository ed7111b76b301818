"""Download NYU Depth v2's labeled set: ``nyu_depth_v2_labeled.mat`` and ``splits.mat``.

HTTP goes through the standard library only (urllib). Each file streams to ``<name>.part``. It
is renamed to its final name only when the server's Content-Length is met, so a killed download
never looks whole, and the next call resumes it with a Range request. Every file is checked
after its download, and again before it is skipped as already present: splits.mat by its
sha256, the labeled .mat by its HDF5 layout and frame count (and by sha256 when the caller
gives one; we know no official checksum for it). A file that fails a check is kept, never
deleted, since it is the user's download. ``fetch.json`` beside the files records what was
fetched, from where, and by which versions.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from edgeticket import (
    __version__,
    paths,  # noqa: I001
)
from edgeticket.data.nyu import LABELED_FILE, LabeledMat
from edgeticket.data.prepare import hash_store
from edgeticket.data.splits import OFFICIAL_FRAMES, SPLITS_FILE, SPLITS_SHA256
from edgeticket.errors import UserError
from edgeticket.fsio import sha256_remembered, versions, write_json

NYU_FILES: dict[str, str] = {
    LABELED_FILE: "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
    SPLITS_FILE: "http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat",
}
SIDECAR = paths.FETCH_SIDECAR
CHUNK = 1 << 20


def fetch_nyu(
    out: str | os.PathLike,
    *,
    base_urls: dict[str, str] | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    expect_frames: int | None = OFFICIAL_FRAMES,
) -> dict[str, dict]:
    """Download (or resume, or find already present) the labeled .mat and splits.mat in ``out``.

    ``base_urls`` overrides :data:`NYU_FILES` by file name; a value ending in ``/`` is a folder
    URL and gets the file name appended. ``sha256`` is the labeled .mat's expected checksum, if
    the caller knows one. ``expect_frames`` is the frame count the .mat must hold: 1,449 for
    the official file; tests and subsets pass their own count, or None to accept any.
    ``timeout`` is in seconds, for the connection and for each read.

    Returns, per file name: ``path``, ``url``, ``bytes``, ``sha256`` and ``status``
    ("downloaded", "resumed" or "already present"). Raises :class:`UserError` with one
    sentence when the network fails, a transfer stops (the ``.part`` is kept for the next
    call), or a file fails its check (the file is kept).
    """
    out = Path(out)
    urls = _resolve_urls(base_urls)
    if out.exists() and not out.is_dir():
        raise UserError(
            f"{out}: is a file; pass the folder to download {LABELED_FILE} and {SPLITS_FILE} into."
        )
    out.mkdir(parents=True, exist_ok=True)

    files: dict[str, dict] = {}
    for name, url in urls.items():
        path = out / name
        if path.is_file():
            status = "already present"
        else:
            status = _download(url, path, out, progress, timeout)
        # remembered by (size, mtime) where `data prepare` finds it too: 2.8 GB is hashed once
        digest = sha256_remembered([path], hash_store(out))[path]
        _check(path, digest, sha256, expect_frames)
        files[name] = {
            "path": path,
            "url": url,
            "bytes": path.stat().st_size,
            "sha256": digest,
            "status": status,
        }

    write_json(
        out / SIDECAR,
        {
            "dataset": "NYU Depth v2, labeled subset",
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {n: {k: v for k, v in f.items() if k != "path"} for n, f in files.items()},
            "versions": versions(),
        },
    )
    return files


# --------------------------------------------------------------------------- download


def _resolve_urls(base_urls: dict[str, str] | None) -> dict[str, str]:
    urls = dict(NYU_FILES)
    for name, url in (base_urls or {}).items():
        if name not in NYU_FILES:
            raise UserError(
                f"base_urls names {name!r}; the files to fetch are {', '.join(NYU_FILES)}."
            )
        urls[name] = url + name if url.endswith("/") else url
    return urls


def _download(url: str, path: Path, out: Path, progress: bool, timeout: float) -> str:
    """Fetch ``url`` into ``path`` via ``path.part``; return "downloaded" or "resumed"."""
    part = path.with_name(path.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    resp, total = _open(url, offset, out, timeout)
    if resp is not None and offset:
        if resp.status == 200:  # the server ignored the range: start over
            offset = 0
        elif _content_range(resp)[0] != offset:  # a range we did not ask for: start over
            resp.close()
            offset = 0
            resp, total = _open(url, 0, out, timeout)
    if resp is None:  # 416: the part already holds the whole file
        if total is not None and total != offset:
            raise UserError(
                f"{part}: holds {offset:,} bytes but {url} has {total:,}; "
                f"delete {part.name} and fetch again."
            )
    else:
        with resp:
            _stream(resp, part, offset, url, out, progress)
    os.replace(part, path)
    return "resumed" if offset else "downloaded"


def _open(
    url: str, offset: int, out: Path, timeout: float
) -> tuple[http.client.HTTPResponse | None, int | None]:
    """GET ``url`` from byte ``offset``: (response, None), or (None, total size) for a 416."""
    headers = {"User-Agent": f"edgeticket/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left past ``offset``
            total = _content_range(e)[2]
            e.close()
            return None, total
        raise _unreachable(url, f"HTTP {e.code} {e.reason}", out) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise _unreachable(url, _reason(e), out) from None
    if resp.status not in (200, 206) or (resp.status == 206 and not offset):
        resp.close()
        raise _unreachable(url, f"unexpected HTTP {resp.status}", out)
    return resp, None


def _content_range(resp) -> tuple[int | None, int | None, int | None]:
    """``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) as integers or None."""
    value = resp.headers.get("Content-Range") or ""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None, None
    start, end, total = (int(g) if g and g != "*" else None for g in m.groups())
    return start, end, total


def _stream(resp, part: Path, offset: int, url: str, out: Path, progress: bool) -> None:
    """Append the body to ``part`` (from scratch when ``offset`` is 0) and check its length."""
    length = resp.headers.get("Content-Length")
    if resp.status == 206:
        total = _content_range(resp)[2]
        if total is None and length is not None:
            total = offset + int(length)
    else:
        total = int(length) if length is not None else None
    got = offset
    try:
        with (
            open(part, "ab" if offset else "wb") as f,
            _bar(part.stem, total, offset, progress) as advance,
        ):
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                got += len(chunk)
                advance(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as e:
        raise _stopped(url, part, got, total, _reason(e), out) from None
    if total is not None and got != total:
        raise _stopped(url, part, got, total, "the connection closed early", out)


@contextlib.contextmanager
def _bar(name: str, total: int | None, done: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (bytes, speed, ETA); yields ``advance(n_bytes)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(name, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def _unreachable(url: str, reason: str, out: Path) -> UserError:
    return UserError(
        f"cannot download {url} ({reason}); download {LABELED_FILE} and {SPLITS_FILE} by hand "
        f"and put them in {_folder(out)}."
    )


def _stopped(
    url: str, part: Path, got: int, total: int | None, reason: str, out: Path
) -> UserError:
    of = f" of {total:,}" if total is not None else ""
    return UserError(
        f"the download of {url} stopped after {got:,}{of} bytes ({reason}); {part.name} was kept, "
        f"run the fetch again to resume it or put the files in {_folder(out)} by hand."
    )


def _reason(e: BaseException) -> str:
    r = e.reason if isinstance(e, urllib.error.URLError) else e
    text = " ".join(str(r).split())
    return text or type(r).__name__


def _folder(out: Path) -> str:
    return str(out).rstrip(os.sep) + os.sep


# --------------------------------------------------------------------------- checks


def _check(path: Path, digest: str, sha256: str | None, expect_frames: int | None) -> None:
    """splits.mat by its sha256; the labeled .mat by layout, frame count and optional sha256."""
    if path.name == SPLITS_FILE:
        if digest != SPLITS_SHA256:
            raise _kept(path, f"sha256 is {digest}, expected {SPLITS_SHA256}")
        return
    try:
        mat = LabeledMat(path)
    except UserError as e:
        raise _kept(path, _problem(str(e), path)) from None
    try:
        n = len(mat)
    finally:
        mat.close()
    if expect_frames is not None and n != expect_frames:
        raise _kept(path, f"it holds {n:,} frames, expected {expect_frames:,}")
    if sha256 is not None and digest != sha256.strip().lower():
        raise _kept(path, f"sha256 is {digest}, expected {sha256.strip().lower()}")


def _kept(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}; the file was kept, delete it and fetch again.")


def _problem(message: str, path: Path) -> str:
    """The problem in a reader's one-sentence error, without its path and its advice."""
    prefix = f"{path}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    message = message.rstrip().rstrip(".")
    depth = 0
    for i, c in enumerate(message):
        depth += (c in "([") - (c in ")]")
        if depth == 0 and message.startswith("; ", i):
            return message[:i]
    return message
