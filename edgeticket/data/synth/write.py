"""Writing a synthetic set: n frames of rooms, a few views each, in NYU Depth v2's official files.

``write_synthetic`` renders frames 0..n-1 (in worker processes, streamed into the file in
order) into ``nyu_depth_v2_labeled.mat``: ``views`` consecutive frames show one room from
different poses and share its scene name (``synthroom_NNNNN``), as NYU's frames of one scene
come from one sequence. ``splits.mat`` beside it splits by room, so no room is in both train
and test, and the real readers in ``edgeticket.data.nyu`` read the set unchanged.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeticket.data.config import DEFAULT_VIEWS
from edgeticket.data.nyu import LABELED_FILE, write_labeled_mat
from edgeticket.data.splits import OFFICIAL_FRAMES, SPLITS_FILE, write_splits_mat
from edgeticket.data.synth.shade import render_frames, render_set_frame
from edgeticket.data.synth.streams import SPLIT_TAG, room_and_view
from edgeticket.errors import UserError
from edgeticket.fsio import atomic_path
from edgeticket.progress import track
from edgeticket.runs import claimed, staged

PRESETS: dict[str, int] = {"small": 64, "nyu": OFFICIAL_FRAMES}
MIN_FRAMES = 8
MAX_FRAMES = 65535  # splits.mat holds 1-based indices as uint16
MAX_VIEWS = 64
TRAIN_FRACTION = 795 / 1449  # the official split's share of train frames


def synthetic_split(n: int, seed: int, views: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """0-based (train, test): the official split's share (~55%) of the frames in train, whole rooms
    (``views`` consecutive frames each) drawn by seed, so that no room is in both."""
    room_of = np.arange(n) // int(views)
    n_rooms = int(room_of[-1]) + 1
    n_train = min(max(int(round(n * TRAIN_FRACTION)), 1), n - 1)
    perm = np.random.default_rng([int(seed), SPLIT_TAG]).permutation(n_rooms)
    sizes = np.bincount(room_of, minlength=n_rooms)[perm]
    # the fewest rooms that reach the share, or one room fewer when that is closer; both sides non-empty
    k = int(np.searchsorted(np.cumsum(sizes), n_train)) + 1
    if k > 1 and abs(sizes[: k - 1].sum() - n_train) < abs(sizes[:k].sum() - n_train):
        k -= 1
    k = min(max(k, 1), n_rooms - 1)
    in_train = np.isin(room_of, perm[:k])
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def write_synthetic(
    out: Path, n: int, seed: int = 0, progress: bool = True, workers: int | None = None, views: int = DEFAULT_VIEWS,
    *, overwrite: bool = False,
) -> dict:
    """Render n frames, ``views`` per room, into ``out`` as ``nyu_depth_v2_labeled.mat`` plus ``splits.mat``.

    Frames stream from the workers into the file as they are rendered. The two files are one
    unit: they are written into a staging folder that is swapped in whole (``runs.staged``), so a
    killed run leaves the old dataset or the new one, never a new split beside old frames. A
    folder that holds a dataset is replaced only with ``overwrite``; one that already holds
    these frames (same n, seed and views) is left as it is (``"reused": True``).
    """
    out = Path(out)
    n = _checked_n(n)
    if int(views) != views or not 1 <= views <= MAX_VIEWS:
        raise UserError(f"--views {views}: give a whole number of views per room from 1 to {MAX_VIEWS}.")
    views = int(views)
    if -(-n // views) < 2:
        raise UserError(f"--views {views}: {n} frames make one room; give at most {(n + 1) // 2} views so that "
                        "both train and test get a room.")
    if int(seed) < 0:
        raise UserError(f"--seed {seed}: give a seed >= 0.")
    if workers is None:
        workers = os.cpu_count() or 1
    if int(workers) < 1:
        raise UserError(f"--workers {workers}: give at least 1 worker process.")
    workers = min(int(workers), n)
    train, test = synthetic_split(n, seed, views)
    start = time.perf_counter()
    settings = {"frames": n, "seed": int(seed), "views": views}
    with claimed(out, "dataset", settings, overwrite=overwrite, resume_option=None, stage=True) as claim:
        reused = claim.action == "resume"
        if not reused:
            frames = track(_frames(n, int(seed), workers, views), "rendering rooms", total=n, enabled=progress)
            with staged(out) as stage:
                with atomic_path(stage / LABELED_FILE) as tmp:
                    write_labeled_mat(tmp, frames, n, scenes=scene_names(n, views))
                write_splits_mat(stage / SPLITS_FILE, train, test)
                claim.mark(stage)
    seconds = time.perf_counter() - start
    return {
        "reused": reused,
        "path": str(out),
        "n": n,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "seed": int(seed),
        "views": views,
        "rooms": -(-n // views),
        "workers": workers,
        "seconds": round(seconds, 3),
        "frames_per_s": round(n / seconds, 3) if seconds > 0 else float("inf"),
    }


def _checked_n(n: int) -> int:
    if int(n) != n or not MIN_FRAMES <= n <= MAX_FRAMES:
        raise UserError(
            f"--n {n}: give a whole number of frames from {MIN_FRAMES} to {MAX_FRAMES}, "
            "so that both train and test get frames."
        )
    return int(n)


def scene_names(n: int, views: int = DEFAULT_VIEWS) -> list[str]:
    """Each frame's scene: its room (NYU names a scene by room and visit, kitchen_0028b)."""
    return [f"synthroom_{room_and_view(i, views)[0]:05d}" for i in range(n)]


def _frames(n: int, seed: int, workers: int, views: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames in order; with workers > 1, at most 2 per worker are in flight at a time."""
    if workers <= 1:
        yield from render_frames(n, seed, views=views)
        return
    # spawn, not fork: the caller may hold torch's thread pools, which do not survive a fork
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        nxt = 0
        while nxt < n and len(pending) < 2 * workers:
            pending.append(pool.apply_async(render_set_frame, (seed, nxt, views)))
            nxt += 1
        while pending:
            frame = pending.popleft().get()
            if nxt < n:
                pending.append(pool.apply_async(render_set_frame, (seed, nxt, views)))
                nxt += 1
            yield frame
