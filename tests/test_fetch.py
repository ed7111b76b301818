"""fetch_nyu against a loopback HTTP server: download, resume, interruption, checks, no network."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeticket import fsio
from edgeticket.data.fetch import NYU_FILES, SIDECAR, fetch_nyu
from edgeticket.data.nyu import LABELED_FILE
from edgeticket.data.splits import SPLITS_FILE, SPLITS_SHA256, official_split_path
from edgeticket.errors import UserError
from edgeticket.fsio import read_json

N_FRAMES = 2


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.state.files``; honours ``Range: bytes=N-`` unless told to ignore it."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        st = self.server.state
        rng = self.headers.get("Range")
        st.requests.append((self.path, rng))
        if st.stall:
            time.sleep(st.stall)
        body = st.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and not st.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if st.drop_after is not None:  # simulate a dropped connection, once
            payload, st.drop_after = payload[: st.drop_after], None
        try:
            self.wfile.write(payload)
        except ConnectionError:
            pass

    def log_message(self, *args):
        pass


class _Server:
    def __init__(self, files: dict[str, bytes]):
        self.files = {"/" + name: data for name, data in files.items()}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.drop_after: int | None = None
        self.stall = 0.0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every GET for ``name`` (None when there was none)."""
        return [rng for path, rng in self.requests if path == "/" + name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def labeled_bytes(tmp_path_factory) -> bytes:
    """A small valid labeled .mat of N_FRAMES frames, as MATLAB v7.3 lays it out."""
    from test_data import write_mat

    return write_mat(tmp_path_factory.mktemp("mat") / LABELED_FILE, n=N_FRAMES).read_bytes()


@pytest.fixture(scope="module")
def splits_bytes() -> bytes:
    return official_split_path().read_bytes()


@pytest.fixture
def server(labeled_bytes, splits_bytes):
    srv = _Server({LABELED_FILE: labeled_bytes, SPLITS_FILE: splits_bytes})
    yield srv
    srv.close()


def _fetch(out, server, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("expect_frames", N_FRAMES)
    return fetch_nyu(out, base_urls={n: server.url(n) for n in NYU_FILES}, timeout=5.0, **kw)


def _one_sentence(msg: str) -> None:
    assert "\n" not in msg
    assert msg.endswith(".")
    assert ". " not in msg, msg


def test_clean_download(tmp_path, server, labeled_bytes, splits_bytes):
    out = tmp_path / "nyu"
    res = _fetch(out, server, progress=True)  # the rich bar must not break anything
    assert {n: r["status"] for n, r in res.items()} == {
        LABELED_FILE: "downloaded",
        SPLITS_FILE: "downloaded",
    }
    assert (out / LABELED_FILE).read_bytes() == labeled_bytes
    assert (out / SPLITS_FILE).read_bytes() == splits_bytes
    assert res[SPLITS_FILE]["sha256"] == SPLITS_SHA256
    assert res[LABELED_FILE]["bytes"] == len(labeled_bytes)
    assert res[LABELED_FILE]["path"] == out / LABELED_FILE
    assert not list(out.glob("*.part")) and not list(out.glob(".*.tmp"))
    side = read_json(out / SIDECAR)
    assert side["files"][SPLITS_FILE]["url"] == server.url(SPLITS_FILE)
    assert side["files"][LABELED_FILE]["bytes"] == len(labeled_bytes)
    assert side["files"][LABELED_FILE]["sha256"] == res[LABELED_FILE]["sha256"]
    assert side["time"] and "edgeticket" in side["versions"]
    assert server.gets(LABELED_FILE) == [None]


def test_resume_from_part(tmp_path, server, labeled_bytes):
    half = len(labeled_bytes) // 2
    (tmp_path / (LABELED_FILE + ".part")).write_bytes(labeled_bytes[:half])
    res = _fetch(tmp_path, server)
    assert server.gets(LABELED_FILE) == [f"bytes={half}-"]
    assert res[LABELED_FILE]["status"] == "resumed"
    assert res[SPLITS_FILE]["status"] == "downloaded"
    assert (tmp_path / LABELED_FILE).read_bytes() == labeled_bytes
    assert not (tmp_path / (LABELED_FILE + ".part")).exists()


def test_interrupted_then_resumed(tmp_path, server, labeled_bytes):
    k = 100_000
    server.drop_after = k
    with pytest.raises(UserError) as ei:
        _fetch(tmp_path, server)
    msg = str(ei.value)
    _one_sentence(msg)
    assert server.url(LABELED_FILE) in msg and "resume" in msg
    part = tmp_path / (LABELED_FILE + ".part")
    assert part.stat().st_size == k
    assert not (tmp_path / LABELED_FILE).exists()

    res = _fetch(tmp_path, server)
    assert server.gets(LABELED_FILE) == [None, f"bytes={k}-"]
    assert res[LABELED_FILE]["status"] == "resumed"
    assert (tmp_path / LABELED_FILE).read_bytes() == labeled_bytes


def test_server_ignoring_range_restarts(tmp_path, server, labeled_bytes):
    server.ignore_range = True
    # A part of garbage: if it were appended to, the result would be wrong.
    (tmp_path / (LABELED_FILE + ".part")).write_bytes(b"\xff" * 1000)
    res = _fetch(tmp_path, server)
    assert server.gets(LABELED_FILE) == ["bytes=1000-"]
    assert res[LABELED_FILE]["status"] == "downloaded"
    assert (tmp_path / LABELED_FILE).read_bytes() == labeled_bytes


def test_whole_part_answered_416(tmp_path, server, labeled_bytes):
    (tmp_path / (LABELED_FILE + ".part")).write_bytes(labeled_bytes)
    res = _fetch(tmp_path, server)
    assert server.gets(LABELED_FILE) == [f"bytes={len(labeled_bytes)}-"]
    assert res[LABELED_FILE]["status"] == "resumed"
    assert (tmp_path / LABELED_FILE).read_bytes() == labeled_bytes


def test_wrong_sha256_keeps_file(tmp_path, server, labeled_bytes):
    with pytest.raises(UserError) as ei:
        _fetch(tmp_path, server, sha256="0" * 64)
    msg = str(ei.value)
    _one_sentence(msg)
    assert LABELED_FILE in msg and "kept" in msg and "0" * 64 in msg
    assert (tmp_path / LABELED_FILE).read_bytes() == labeled_bytes


def test_right_sha256_passes(tmp_path, server, labeled_bytes):
    import hashlib

    res = _fetch(tmp_path, server, sha256=hashlib.sha256(labeled_bytes).hexdigest().upper())
    assert res[LABELED_FILE]["status"] == "downloaded"


def test_corrupt_mat_keeps_file(tmp_path, server):
    server.files["/" + LABELED_FILE] = b"this is not HDF5\n" * 4096
    with pytest.raises(UserError) as ei:
        _fetch(tmp_path, server)
    msg = str(ei.value)
    _one_sentence(msg)
    assert str(tmp_path / LABELED_FILE) in msg and "HDF5" in msg and "kept" in msg
    assert (tmp_path / LABELED_FILE).exists()


def test_frame_count_checked(tmp_path, server):
    with pytest.raises(UserError, match=r"holds 2 frames, expected 1,449") as ei:
        _fetch(tmp_path, server, expect_frames=1449)
    _one_sentence(str(ei.value))
    assert (tmp_path / LABELED_FILE).exists()
    assert _fetch(tmp_path, server, expect_frames=None)[LABELED_FILE]["status"] == "already present"


def test_wrong_splits_keeps_file(tmp_path, server):
    server.files["/" + SPLITS_FILE] = b"MATLAB 5.0 MAT-file, but not the official split"
    with pytest.raises(UserError) as ei:
        _fetch(tmp_path, server)
    msg = str(ei.value)
    _one_sentence(msg)
    assert SPLITS_FILE in msg and SPLITS_SHA256 in msg and "kept" in msg
    assert (tmp_path / SPLITS_FILE).exists()


def test_no_network(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connections are refused
    out = tmp_path / "nyu"
    with pytest.raises(UserError) as ei:
        fetch_nyu(
            out, base_urls={n: f"http://127.0.0.1:{port}/" for n in NYU_FILES}, progress=False
        )
    msg = str(ei.value)
    _one_sentence(msg)
    assert f"http://127.0.0.1:{port}/{LABELED_FILE}" in msg
    assert "by hand" in msg and f"{out}/" in msg and SPLITS_FILE in msg
    assert not (out / LABELED_FILE).exists()


def test_http_404(tmp_path, server):
    del server.files["/" + SPLITS_FILE]
    with pytest.raises(UserError) as ei:
        _fetch(tmp_path, server)
    msg = str(ei.value)
    _one_sentence(msg)
    assert server.url(SPLITS_FILE) in msg and "404" in msg and "by hand" in msg


def test_timeout(tmp_path, server):
    server.stall = 2.0
    with pytest.raises(UserError, match="timed out") as ei:
        fetch_nyu(
            tmp_path, base_urls={n: server.url(n) for n in NYU_FILES}, progress=False, timeout=0.3
        )
    _one_sentence(str(ei.value))


def test_already_present(tmp_path, server, monkeypatch):
    first = _fetch(tmp_path, server)
    server.requests.clear()
    hashed = []
    monkeypatch.setattr(fsio, "sha256_file", lambda p: hashed.append(p) or "")
    res = _fetch(tmp_path, server)
    assert {n: r["status"] for n, r in res.items()} == {n: "already present" for n in NYU_FILES}
    assert server.requests == []
    assert hashed == []  # the remembered sha256s are reused while size and mtime match
    assert {n: r["sha256"] for n, r in res.items()} == {n: r["sha256"] for n, r in first.items()}


def test_already_present_but_changed_is_checked(tmp_path, server):
    _fetch(tmp_path, server)
    splits = tmp_path / SPLITS_FILE
    data = bytearray(splits.read_bytes())
    data[-1] ^= 0xFF
    splits.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256 is .*the file was kept"):
        _fetch(tmp_path, server)
    assert splits.read_bytes() == bytes(data)


def test_part_larger_than_file(tmp_path, server, labeled_bytes):
    part = tmp_path / (LABELED_FILE + ".part")
    part.write_bytes(labeled_bytes + b"extra")
    with pytest.raises(UserError, match=r"delete .*\.part and fetch again") as ei:
        _fetch(tmp_path, server)
    _one_sentence(str(ei.value))
    assert part.exists() and not (tmp_path / LABELED_FILE).exists()


def test_unknown_file_name(tmp_path):
    with pytest.raises(UserError, match="the files to fetch are"):
        fetch_nyu(tmp_path, base_urls={"other.mat": "http://127.0.0.1:1/"}, progress=False)
