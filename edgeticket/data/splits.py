"""Which frames are train, val and test.

Precedence (see DESIGN.md): a folder's own ``splits.mat``; else, for an official labeled .mat of
exactly 1,449 frames, the official 795/654 split shipped with this package; a nyu2 PNG folder
without a split is all test; anything else is an error that says how to supply a split.
Indices are 0-based in memory and 1-based in ``splits.mat``, as MATLAB writes them.
"""

from __future__ import annotations

import io
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
    if np.intersect1d(train, test).size:
        raise UserError(f"{path}: frames {np.intersect1d(train, test)[:5].tolist()} (0-based) are in both train and test.")


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


def carve_val(train: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Take ``fraction`` of train (at least one frame when fraction > 0) as validation, seeded."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--val-fraction {fraction}: give a fraction in [0, 1).")
    n_val = int(round(len(train) * fraction))
    if fraction > 0 and n_val == 0 and len(train) > 1:
        n_val = 1
    if n_val >= len(train) and len(train) > 0:
        raise UserError(f"--val-fraction {fraction} leaves no training frames out of {len(train)}.")
    perm = np.random.default_rng(seed).permutation(len(train))
    val = np.sort(train[perm[:n_val]])
    rest = np.sort(train[perm[n_val:]])
    return rest, val


def resolve_split(folder: Path, kind: str, n_frames: int, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Apply the precedence rules to a source folder (``kind`` is 'labeled' or 'nyu2')."""
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
    if len(train):
        train, val = carve_val(train, val_fraction, seed)
    else:
        val = np.array([], dtype=np.int64)
    return Split(train=train, val=val, test=test, origin=origin)
