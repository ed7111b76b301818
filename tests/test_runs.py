"""Run folders: kinds and identities, one writer per folder, artifacts swapped in whole."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.runs import (
    FolderLock,
    claim_action,
    disk_error,
    folder_info,
    lock_path,
    recover,
    refuse_overlap,
    staged,
    write_marker,
)


def test_claim_rules_by_kind_and_identity(tmp_path):
    out = tmp_path / "run"
    assert claim_action(out, "finetune", {"lr": 0.1}, resume=False, overwrite=False) == "fresh"
    out.mkdir()
    assert claim_action(out, "finetune", {"lr": 0.1}, resume=False, overwrite=False) == "fresh"  # empty
    write_marker(out, "finetune", {"lr": 0.1, "data": "a"})
    assert claim_action(out, "export", {}, resume=False, overwrite=False) == "fresh"  # a marker alone: nothing written
    (out / paths.LAST).write_bytes(b"")
    assert claim_action(out, "finetune", {"lr": 0.1, "data": "a"}, resume=True, overwrite=False) == "resume"
    with pytest.raises(UserError, match=r"other settings \(data\)"):
        claim_action(out, "finetune", {"lr": 0.1, "data": "b"}, resume=True, overwrite=False)
    with pytest.raises(UserError, match="pass --resume to continue it or --overwrite"):
        claim_action(out, "finetune", {"lr": 0.1, "data": "a"}, resume=False, overwrite=False)
    with pytest.raises(UserError, match=r"other settings \(data\); pass --overwrite to replace it or choose another"):
        claim_action(out, "finetune", {"lr": 0.1}, resume=False, overwrite=False)  # --resume would be refused
    # a command that redoes its work whole (no --resume) reruns into its own folder of the same identity
    assert claim_action(out, "finetune", {"lr": 0.1, "data": "a"}, resume=False, overwrite=False,
                        resume_option=None) == "resume"
    with pytest.raises(UserError, match=r"\(data\); pass --overwrite") as e:
        claim_action(out, "finetune", {"data": "b", "lr": 0.1}, resume=False, overwrite=False, resume_option=None)
    assert "--resume" not in str(e.value)
    with pytest.raises(UserError) as e:
        claim_action(out, "finetune", {}, resume=False, overwrite=False, resume_option=None, overwrite_option=None)
    assert "--resume" not in str(e.value) and "--overwrite" not in str(e.value)
    assert claim_action(out, "finetune", {"lr": 0.2}, resume=False, overwrite=True) == "overwrite"
    for resume, overwrite in ((False, False), (True, False), (False, True)):
        with pytest.raises(UserError, match="holds a fine-tuned model, not an ONNX export"):
            claim_action(out, "export", {}, resume=resume, overwrite=overwrite)


def test_foreign_files_are_never_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="files that no edgeticket command wrote"):
        claim_action(tmp_path, "export", {}, resume=False, overwrite=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        claim_action(f, "export", {}, resume=False, overwrite=True)


@pytest.mark.parametrize("files, kind", [
    ([paths.PIPELINE_STATE], "pipeline"), ([paths.SEARCH, "level_00"], "search"), ([paths.REPORT_JSON], "bench"),
    ([paths.EXPORT_JSON, paths.ONNX], "export"), ([paths.CACHE_META], "cache"), ([paths.LABELED, paths.SPLITS_MAT], "dataset"),
    ([paths.META, paths.SPARSITY, paths.MASK], "level"), ([paths.META, paths.LAST], "finetune"), ([paths.MASK], "ticket"),
])
def test_folders_of_older_versions_are_recognised_by_their_files(tmp_path, files, kind):
    for f in files:
        (tmp_path / f).write_text("{}")
    info = folder_info(tmp_path)
    assert info.kind == kind and info.legacy


def test_outputs_may_not_overlap_inputs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    refuse_overlap(tmp_path / "out", {"data folder": data, "teacher": None})
    for out, match in ((data, "is the data folder"), (data / "x", "is inside the data folder"), (tmp_path, "holds the data folder")):
        with pytest.raises(UserError, match=match):
            refuse_overlap(out, {"data folder": data})


HOLD = """
import sys, time
from edgeticket.runs import FolderLock
with FolderLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"another edgeticket command is writing it \(pid {proc.pid}\)"):
            with FolderLock(out):
                pass
    finally:
        proc.kill()
        proc.wait()
    with FolderLock(out):  # the lock dies with its holder
        assert lock_path(out).read_text() == str(os.getpid())


def test_a_staged_folder_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "a").write_text("old a")
    (out / "b").write_text("old b")
    with staged(out) as st:
        (st / "a").write_text("new a")
    assert sorted(p.name for p in out.iterdir()) == ["a"] and (out / "a").read_text() == "new a"
    assert not list(tmp_path.glob(".export*"))
    with pytest.raises(RuntimeError):
        with staged(out) as st:
            (st / "a").write_text("half")
            raise RuntimeError("killed while writing")
    assert (out / "a").read_text() == "new a" and not list(tmp_path.glob(".export*"))


KILL_BETWEEN_RENAMES = """
import sys
from pathlib import Path
from edgeticket.runs import staged
out = Path(sys.argv[1])
with staged(out) as st:
    (st / "a").write_text("new a")
    (st / "b").write_text("new b")
"""


def test_a_kill_between_the_two_renames_is_finished_by_the_next_command(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "a").write_text("old a")
    env = {**os.environ, "EDGETICKET_FAULT": "swap:1"}
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(out)], env=env)
    assert proc.returncode == -9 and not out.exists()  # killed with the old set moved away: no mix visible
    assert recover(out) == "finished"
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a": "new a", "b": "new b"}
    assert not list(tmp_path.glob(".export*"))


def test_a_kill_while_staging_leaves_the_old_set(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "a").write_text("old a")
    stage = tmp_path / ".export.staging-dead"
    stage.mkdir()
    (stage / "a").write_text("half")
    assert recover(out) == "cleaned" and (out / "a").read_text() == "old a" and not stage.exists()
    old = tmp_path / ".export.old-dead"
    os.replace(out, old)  # as if killed after the first rename, before the stage was complete
    assert recover(out) == "undone" and (out / "a").read_text() == "old a"


def test_disk_errors_are_one_sentence_naming_the_folder(tmp_path):
    for code, why in ((errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EFBIG, "file-size limit")):
        msg = str(disk_error(tmp_path, OSError(code, os.strerror(code))))
        assert msg.startswith(f"{tmp_path}: cannot write there: ") and why in msg and "\n" not in msg


def test_marker_round_trip(tmp_path):
    write_marker(tmp_path, "search", {"levels": 3})
    (tmp_path / paths.SEARCH).write_text("{}")
    info = folder_info(tmp_path)
    assert (info.kind, info.settings, info.legacy) == ("search", {"levels": 3}, False)
    assert time.strftime("%Y") in (tmp_path / paths.RUN_MARKER).read_text()
    with pytest.raises(ValueError):
        write_marker(tmp_path, "nonsense", {})
    assert Path(tmp_path).exists()
