"""Which frames are train, val and test.

Precedence (see DESIGN.md): a folder's own ``splits.mat``; else, for an official labeled .mat of
exactly 1,449 frames, the official 795/654 split shipped with this package; a nyu2 PNG folder
without a split is all test; anything else is an error that says how to supply a split.
Indices are 0-based in memory and 1-based in ``splits.mat``, as MATLAB writes them.

Validation is carved from the train frames, never from test. Where the data names each frame's
scene (the labeled .mat's ``scenes``, which the synthetic rooms write too), whole scenes go to
validation, so that no validation frame has a near-duplicate neighbour of its sequence in train:
val δ1 picks the best epoch and the ticket, and a carve by frame makes it optimistic. Scenes of
one room (``kitchen_0028a``, ``kitchen_0028b``: NYU's visits of one room) count as one. Without
scene names the carve is by frame. ``Split.val_carve`` says which was used.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import write_bytes

SPLITS_FILE = paths.SPLITS_MAT
OFFICIAL_FRAMES = 1449
SPLITS_SHA256 = "6e081404491a8bfba2f066beaa9713ef6046f9007aa5f799f2a350506a580cee"


@dataclass(frozen=True)
class Split:
    """0-based frame indices into a source; ``origin`` says where the split came from."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    origin: str
    val_carve: str = "frame"  # "scene" (whole scenes) or "frame"

    def indices(self, name: str) -> np.ndarray:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def read_splits_mat(path: str | Path, n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``trainNdxs``/``testNdxs`` (1-based) and return 0-based train and test indices."""
    import scipy.io

    path = Path(path)
    try:
        d = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a file it cannot parse
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable MATLAB split file ({reason}); it needs trainNdxs and testNdxs.") from None
    for key in ("trainNdxs", "testNdxs"):
        if key not in d:
            raise UserError(f"{path}: the split file has no {key!r}; it needs trainNdxs and testNdxs (1-based frame indices).")
    train = np.asarray(d["trainNdxs"]).ravel().astype(np.int64) - 1
    test = np.asarray(d["testNdxs"]).ravel().astype(np.int64) - 1
    _check_indices(path, train, test, n_frames)
    return train, test


def _check_indices(path: Path, train: np.ndarray, test: np.ndarray, n_frames: int | None) -> None:
    both = np.concatenate([train, test])
    if both.size == 0:
        raise UserError(f"{path}: the split lists no frames.")
    if both.min() < 0:
        raise UserError(f"{path}: the split holds index {int(both.min()) + 1}; indices are 1-based and start at 1.")
    if n_frames is not None and both.max() >= n_frames:
        raise UserError(
            f"{path}: the split indexes frame {int(both.max()) + 1} but the data has only {n_frames} frames; "
            "use the split that came with this data."
        )
    for name, idx in (("trainNdxs", train), ("testNdxs", test)):
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            dup = (values[counts > 1][:5] + 1).tolist()
            raise UserError(f"{path}: {name} lists frames {dup} (1-based) more than once; each frame may appear once.")
    if np.intersect1d(train, test).size:
        raise UserError(f"{path}: frames {(np.intersect1d(train, test)[:5] + 1).tolist()} (1-based) are in both "
                        "trainNdxs and testNdxs; a frame belongs to one of them.")


def write_splits_mat(path: str | Path, train: np.ndarray, test: np.ndarray) -> None:
    """Write 0-based train/test indices as MATLAB v5 1-based column vectors, atomically."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(
        buf,
        {
            "trainNdxs": (np.asarray(train, dtype=np.int64) + 1).astype(np.uint16).reshape(-1, 1),
            "testNdxs": (np.asarray(test, dtype=np.int64) + 1).astype(np.uint16).reshape(-1, 1),
        },
        format="5",
    )
    write_bytes(path, buf.getvalue())


def official_split_path() -> Path:
    return Path(str(resources.files("edgeticket.data").joinpath(SPLITS_FILE)))


def official_split() -> tuple[np.ndarray, np.ndarray]:
    return read_splits_mat(official_split_path(), OFFICIAL_FRAMES)


def carve_val(train: np.ndarray, fraction: float, seed: int = 0,
              groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Take ``fraction`` of train (at least one frame when fraction > 0) as validation, seeded.

    ``groups`` (one id per frame of the source, e.g. ``scene_groups``) carves whole groups: the
    seeded order of the train frames' groups is taken until the count is nearest the fraction's,
    at least one group and never all of them.
    """
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--val-fraction {fraction}: give a fraction in [0, 1).")
    n_val = int(round(len(train) * fraction))
    if fraction > 0 and n_val == 0 and len(train) > 1:
        n_val = 1
    if n_val >= len(train) and len(train) > 0:
        raise UserError(f"--val-fraction {fraction} leaves no training frames out of {len(train)}.")
    if groups is not None and n_val > 0:
        return _carve_groups(train, n_val, seed, np.asarray(groups)[train])
    perm = np.random.default_rng(seed).permutation(len(train))
    val = np.sort(train[perm[:n_val]])
    rest = np.sort(train[perm[n_val:]])
    return rest, val


def _carve_groups(train: np.ndarray, n_val: int, seed: int, group_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, sizes = np.unique(group_of, return_counts=True)
    if len(ids) < 2:
        raise UserError(f"--val-carve scene: the {len(train)} train frames are all of one scene, so no scene can be "
                        "held out; use --val-carve frame.")
    perm = np.random.default_rng(seed).permutation(len(ids))
    total = np.cumsum(sizes[perm])
    k = int(np.searchsorted(total, n_val)) + 1  # the fewest groups that reach n_val ...
    if k > 1 and abs(total[k - 2] - n_val) < abs(total[k - 1] - n_val):
        k -= 1  # ... or one fewer, when that is nearer
    k = min(k, len(ids) - 1)
    in_val = np.isin(group_of, ids[perm[:k]])
    return np.sort(train[~in_val]), np.sort(train[in_val])


_VISIT = re.compile(r"^(.*_\d+)[a-z]$")


def scene_groups(names: Sequence[str]) -> np.ndarray:
    """One group id per frame: frames of one scene share it, as do the scenes of one room
    (NYU's ``kitchen_0028a`` and ``kitchen_0028b`` are two visits of one kitchen); a frame with
    no scene name is a group of its own."""
    rooms = [_VISIT.sub(r"\1", n) if n else f"\0{i}" for i, n in enumerate(names)]  # NUL: in no real name
    return np.unique(rooms, return_inverse=True)[1].astype(np.int64)


def resolve_split(folder: Path, kind: str, n_frames: int, val_fraction: float = 0.1, seed: int = 0,
                  scenes: Sequence[str] | None = None, carve: str = "auto") -> Split:
    """Apply the precedence rules to a source folder (``kind`` is 'labeled' or 'nyu2').

    ``scenes`` names each frame's scene (None when the data names none); ``carve`` is
    ``auto`` (by scene where there are scene names, else by frame), ``scene`` or ``frame``.
    """
    own = folder / SPLITS_FILE
    if own.exists():
        train, test = read_splits_mat(own, n_frames)
        origin = str(own)
    elif kind == "labeled" and n_frames == OFFICIAL_FRAMES:
        train, test = official_split()
        origin = "official NYU Depth v2 split (shipped with edgeticket)"
    elif kind == "nyu2":
        train, test = np.array([], dtype=np.int64), np.arange(n_frames, dtype=np.int64)
        origin = "nyu2 folder without a split: all test"
    else:
        raise UserError(
            f"{folder}: {n_frames} frames and no {SPLITS_FILE}; put a {SPLITS_FILE} with trainNdxs and testNdxs "
            "(1-based) beside the data."
        )
    groups = _carve_groups_of(folder, train, scenes, carve) if len(train) else None
    if len(train):
        train, val = carve_val(train, val_fraction, seed, groups)
    else:
        val = np.array([], dtype=np.int64)
    return Split(train=train, val=val, test=test, origin=origin, val_carve="frame" if groups is None else "scene")


def _carve_groups_of(folder: Path, train: np.ndarray, scenes: Sequence[str] | None, carve: str) -> np.ndarray | None:
    """The scene groups to carve by, or None to carve by frame."""
    if carve not in ("auto", "scene", "frame"):
        raise ValueError(f"carve {carve!r}: choose auto, scene or frame")
    named = scenes is not None and any(scenes)
    if carve == "scene" and not named:
        raise UserError(f"--val-carve scene: {folder} names no scenes (only a labeled .mat with 'scenes' does); "
                        "use --val-carve frame or auto.")
    if not named or carve == "frame":
        return None
    groups = scene_groups(scenes)
    if carve == "auto" and len(np.unique(groups[train])) < 2:
        return None  # the train frames are one scene: nothing to hold out whole, so auto carves by frame
    return groups
