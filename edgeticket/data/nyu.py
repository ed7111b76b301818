"""Readers for NYU Depth v2: the official labeled .mat (HDF5) and the nyu2 PNG layout.

Both return frames as (HxWx3 uint8 RGB, HxW float32 metres) at 480x640, by index, lazily:
the 2.8 GB labeled file is never read whole. ``write_labeled_mat`` writes the labeled layout
from such frames, beside the reader that defines it, for the synthetic rooms and the tests.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edgeticket import paths
from edgeticket.data.splits import Split, resolve_split
from edgeticket.errors import UserError
from edgeticket.fsio import atomic_path

LABELED_FILE = paths.LABELED
FRAME_H, FRAME_W = 480, 640
MAX_DEPTH = 10.0
MAT73_USERBLOCK = 512


class LabeledMat:
    """``nyu_depth_v2_labeled.mat``: MATLAB v7.3, i.e. HDF5 behind a 512-byte header.

    In h5py, ``images`` is (N, 3, 640, 480) uint8 and ``depths`` (N, 640, 480) float32 metres:
    MATLAB's column-major order shows through as swapped height and width. ``scenes``, when
    present, names each frame's scene (``kitchen_0028b``): see ``scene_names``.
    """

    kind = "labeled"

    def __init__(self, path: str | Path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file; put {LABELED_FILE} there or run `edgeticket data fetch nyu`.")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise UserError(
                f"{self.path}: not a readable HDF5/MATLAB v7.3 file ({_first_line(e)}); the download may be truncated, fetch it again."
            ) from None
        self.images, self.depths = self._checked_datasets()

    def _checked_datasets(self):
        f = self._f
        for key in ("images", "depths"):
            if key not in f:
                raise UserError(f"{self.path}: no {key!r} dataset; this is not NYU Depth v2's labeled file.")
        images, depths = f["images"], f["depths"]
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, FRAME_W, FRAME_H):
            raise UserError(
                f"{self.path}: 'images' has shape {tuple(images.shape)}, expected (N, 3, {FRAME_W}, {FRAME_H}) as MATLAB writes it."
            )
        if depths.ndim != 3 or tuple(depths.shape[1:]) != (FRAME_W, FRAME_H):
            raise UserError(
                f"{self.path}: 'depths' has shape {tuple(depths.shape)}, expected (N, {FRAME_W}, {FRAME_H}) as MATLAB writes it."
            )
        if images.dtype != np.uint8:
            raise UserError(f"{self.path}: 'images' is {images.dtype}, expected uint8 RGB.")
        if depths.dtype not in (np.float32, np.float64):
            raise UserError(f"{self.path}: 'depths' is {depths.dtype}, expected float32 metres.")
        if images.shape[0] != depths.shape[0]:
            raise UserError(f"{self.path}: {images.shape[0]} images but {depths.shape[0]} depth maps; the file is inconsistent.")
        if images.shape[0] == 0:
            raise UserError(f"{self.path}: the file holds no frames.")
        return images, depths

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def frame_id(self, i: int) -> int:
        return int(i)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            rgb = np.ascontiguousarray(self.images[i].transpose(2, 1, 0))
            depth = np.ascontiguousarray(self.depths[i].T, dtype=np.float32)
        except OSError as e:
            raise UserError(f"{self.path}: frame {i} cannot be read ({_first_line(e)}); the file is truncated or corrupt.") from None
        return rgb, check_depth(depth, f"{self.path} frame {i}")

    def scene_names(self) -> list[str] | None:
        """Each frame's scene name, in frame order; None when the file has no ``scenes``.

        MATLAB v7.3 stores the N x 1 cell array as (1, N) object references, each to a char
        array of UTF-16 code units (uint16, shaped (length, 1)); an empty name as its
        dimensions flagged MATLAB_empty.
        """
        import h5py

        if "scenes" not in self._f:
            return None
        cell = self._f["scenes"]
        if h5py.check_dtype(ref=cell.dtype) is not h5py.Reference:
            raise UserError(f"{self.path}: 'scenes' is {cell.dtype}, not MATLAB's cell array of scene names.")
        refs = cell[()].ravel()
        if len(refs) != len(self):
            raise UserError(f"{self.path}: 'scenes' names {len(refs)} scenes for {len(self)} frames; the file is inconsistent.")
        return [self._scene_name(i, ref) for i, ref in enumerate(refs)]

    def _scene_name(self, i: int, ref) -> str:
        try:
            chars = self._f[ref]
            ok = _attr_text(chars.attrs.get("MATLAB_class")) == "char"
        except (ValueError, KeyError, OSError):  # a null or dangling reference
            ok = False
        if not ok:
            raise UserError(f"{self.path}: scene {i} in 'scenes' is not a MATLAB char array; the file is corrupt.")
        if chars.attrs.get("MATLAB_empty", 0):
            return ""
        return np.asarray(chars[()], dtype="<u2").tobytes().decode("utf-16-le", errors="replace")

    def close(self) -> None:
        self._f.close()

    def source_files(self) -> list[Path]:
        return [self.path]


def write_labeled_mat(
    path: str | Path,
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    n: int,
    *,
    scenes: Sequence[str] | None = None,
    created: str | None = None,
    unwritten_ok: bool = False,
) -> None:
    """Write ``frames`` into ``path`` as ``nyu_depth_v2_labeled.mat`` holds them, atomically.

    ``frames`` yields n (HxWx3 uint8 RGB, HxW float32 metres) at 480x640. Each is written as it
    comes, into a chunk of its own (the reader's unit), so a set of any size streams through.
    The layout is LabeledMat's, with MATLAB's class attributes and its 512-byte v7.3 header,
    dated ``created`` (default: now). ``scenes``, one name per frame, is written as MATLAB
    writes a cell array of strings (see ``LabeledMat.scene_names``).

    A stream that ends before n frames is an error unless ``unwritten_ok``: the frames not
    given then take no space (HDF5 allocates no chunk that was never written) and read as
    zeros, which lets a test fake all 1,449 frames.
    """
    import h5py

    if int(n) < 1:
        raise ValueError(f"write_labeled_mat: n={n}; a labeled file holds at least one frame.")
    if scenes is not None and len(scenes) != n:
        raise ValueError(f"write_labeled_mat: {len(scenes)} scene names for n={n} frames.")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=MAT73_USERBLOCK) as f:
            images, depths = _frame_datasets(f, int(n))
            written = _write_frames(images, depths, frames)
            if scenes is not None:
                _write_cellstr(f, "scenes", scenes)
        if written < n and not unwritten_ok:
            raise ValueError(f"write_labeled_mat: the frames ran out after {written} of {n}.")
        with open(tmp, "r+b") as f:
            f.write(mat73_header(created))


def mat73_header(created: str | None = None) -> bytes:
    """The 512-byte user block MATLAB puts in front of a v7.3 (HDF5) MAT-file."""
    created = created or time.strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    head = text.encode("ascii")[:116].ljust(116, b" ")
    # bytes 116-123: no subsystem data; 124-127: version 0x0200 and the 'IM' endian mark
    return head + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * (MAT73_USERBLOCK - 128)


def _frame_datasets(f, n: int):
    # chunked per frame, stored as MATLAB shows (N, 3, W, H) and (N, W, H) to h5py
    image_shape, depth_shape = (3, FRAME_W, FRAME_H), (FRAME_W, FRAME_H)
    images = f.create_dataset(
        "images", shape=(n, *image_shape), dtype=np.uint8, chunks=(1, *image_shape)
    )
    depths = f.create_dataset(
        "depths", shape=(n, *depth_shape), dtype=np.float32, chunks=(1, *depth_shape)
    )
    images.attrs["MATLAB_class"] = np.bytes_(b"uint8")
    depths.attrs["MATLAB_class"] = np.bytes_(b"single")
    return images, depths


def _write_frames(images, depths, frames) -> int:
    """How many frames were written, in order. A frame of another size or type stops here:
    h5py would cast it, or broadcast it, without a word."""
    n = images.shape[0]
    written = 0
    for rgb, depth in frames:
        if written == n:
            raise ValueError(f"write_labeled_mat: more frames than the n={n} the file was made for.")
        if rgb.shape != (FRAME_H, FRAME_W, 3) or rgb.dtype != np.uint8 or depth.shape != (FRAME_H, FRAME_W):
            raise ValueError(
                f"write_labeled_mat: frame {written} is {rgb.dtype} {rgb.shape} RGB with {depth.shape} depth; "
                f"give ({FRAME_H}, {FRAME_W}, 3) uint8 and ({FRAME_H}, {FRAME_W})."
            )
        images[written] = rgb.transpose(2, 1, 0)
        depths[written] = depth.T
        written += 1
    return written


def _write_cellstr(f, name: str, strings: Sequence[str]) -> None:
    """A MATLAB N x 1 cell array of strings, laid out as LabeledMat.scene_names reads it."""
    import h5py

    refs = f.require_group("#refs#")  # where MATLAB keeps the targets of a file's references
    targets = []
    for i, text in enumerate(strings):
        if text:
            chars = refs.create_dataset(f"{name}_{i}", data=np.frombuffer(text.encode("utf-16-le"), "<u2")[:, None])
            chars.attrs["MATLAB_int_decode"] = np.int32(2)  # the integers are UTF-16 characters
        else:
            chars = refs.create_dataset(f"{name}_{i}", data=np.zeros(2, np.uint64))  # its 0 x 0 size
            chars.attrs["MATLAB_empty"] = np.uint8(1)
        chars.attrs["MATLAB_class"] = np.bytes_(b"char")
        targets.append(chars.ref)
    cell = f.create_dataset(name, data=np.array([targets], dtype=h5py.ref_dtype))
    cell.attrs["MATLAB_class"] = np.bytes_(b"cell")


_COLOR_RE = re.compile(r"^(\d+)_colors\.png$")


class Nyu2Folder:
    """The nyu2 PNG layout: ``NNNNN_colors.png`` (RGB8) and ``NNNNN_depth.png``.

    Depth PNGs are uint16 millimetres (the test set's convention). 8-bit depth PNGs, as in
    DenseDepth's training folder, are read as value / 255 * 10 m. A CSV listing (pairs of
    colour and depth paths per row) is used when present, else the folder is scanned.
    """

    kind = "nyu2"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.pairs = self._find_pairs()
        if not self.pairs:
            raise UserError(f"{self.folder}: no NNNNN_colors.png / NNNNN_depth.png pairs found.")

    def _find_pairs(self) -> list[tuple[int, Path, Path]]:
        csvs = sorted(self.folder.glob("*.csv"))
        if csvs:
            return self._pairs_from_csv(csvs[0])
        pairs = []
        for p in sorted(self.folder.iterdir()):
            m = _COLOR_RE.match(p.name)
            if m:
                depth = p.with_name(f"{m.group(1)}_depth.png")
                if not depth.exists():
                    raise UserError(f"{p}: its depth file {depth.name} is missing.")
                pairs.append((int(m.group(1)), p, depth))
        return pairs

    def _pairs_from_csv(self, listing: Path) -> list[tuple[int, Path, Path]]:
        pairs = []
        with open(listing, newline="") as f:
            for row in csv.reader(f):
                if len(row) < 2:
                    continue
                color, depth = (self._locate(listing, r.strip()) for r in row[:2])
                m = re.match(r"^(\d+)", color.name)
                pairs.append((int(m.group(1)) if m else len(pairs), color, depth))
        return pairs

    def _locate(self, listing: Path, rel: str) -> Path:
        # Kaggle's CSV paths start at the archive root ("data/nyu2_test/00000_colors.png").
        for cand in (self.folder / rel, self.folder.parent / rel, self.folder / Path(rel).name):
            if cand.exists():
                return cand
        raise UserError(f"{listing}: it lists {rel}, which is not in {self.folder}.")

    def __len__(self) -> int:
        return len(self.pairs)

    def frame_id(self, i: int) -> int:
        return self.pairs[i][0]

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        _, cpath, dpath = self.pairs[i]
        try:
            with Image.open(cpath) as im:
                rgb = np.asarray(im.convert("RGB"))
            with Image.open(dpath) as im:
                raw = np.asarray(im)
        except OSError as e:
            raise UserError(f"{cpath.parent}: frame {cpath.name} cannot be read ({_first_line(e)}).") from None
        if raw.ndim == 3:
            raw = raw[..., 0]
        if raw.dtype == np.uint16 or raw.dtype == np.int32:
            depth = raw.astype(np.float32) / 1000.0
        elif raw.dtype == np.uint8:
            depth = raw.astype(np.float32) / 255.0 * MAX_DEPTH
        else:
            raise UserError(f"{dpath}: depth PNG of type {raw.dtype}; expected uint16 millimetres.")
        if rgb.shape[:2] != depth.shape:
            raise UserError(f"{dpath}: depth is {depth.shape} but its colour image is {rgb.shape[:2]}.")
        return rgb, check_depth(depth, str(dpath))

    def close(self) -> None:
        pass

    def scene_names(self) -> None:
        """The nyu2 layout names no scenes."""
        return None

    def source_files(self) -> list[Path]:
        return [p for _, c, d in self.pairs for p in (c, d)]


def check_depth(depth: np.ndarray, where: str) -> np.ndarray:
    """Depth must be finite and non-negative (0 marks a missing measurement)."""
    if not np.isfinite(depth).all():
        raise UserError(f"{where}: depth holds NaN or inf values; the file is corrupt or not depth in metres.")
    if (depth < 0).any():
        raise UserError(f"{where}: depth holds negative values; depth must be metres >= 0 (0 = missing).")
    return depth


def open_source(folder: str | Path) -> LabeledMat | Nyu2Folder:
    """Open a dataset folder: the official labeled .mat, or a nyu2 PNG folder."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder; pass a dataset folder (see `edgeticket data --help`).")
    if folder.is_file():
        if folder.suffix == ".mat":
            return LabeledMat(folder)
        raise UserError(f"{folder}: is a file; pass the folder holding {LABELED_FILE} or the nyu2 PNGs.")
    if (folder / LABELED_FILE).exists():
        return LabeledMat(folder / LABELED_FILE)
    if any(_COLOR_RE.match(p.name) for p in folder.iterdir()) or any(folder.glob("*.csv")):
        return Nyu2Folder(folder)
    raise UserError(
        f"{folder}: holds neither {LABELED_FILE} nor nyu2 PNGs (NNNNN_colors.png); "
        "run `edgeticket data fetch nyu` or `edgeticket data synth`."
    )


def source_folder(source: LabeledMat | Nyu2Folder) -> Path:
    return source.path.parent if isinstance(source, LabeledMat) else source.folder


def open_with_split(folder: str | Path, val_fraction: float = 0.1, seed: int = 0,
                    carve: str = "auto") -> tuple[LabeledMat | Nyu2Folder, Split]:
    """The source and its split; validation is carved by scene where the source names scenes
    (``carve``: auto, scene or frame, see ``splits.resolve_split``)."""
    source = open_source(folder)
    scenes = source.scene_names() if carve != "frame" else None
    return source, resolve_split(source_folder(source), source.kind, len(source), val_fraction, seed, scenes, carve)


def _attr_text(value) -> str | None:
    # MATLAB writes fixed-length ASCII (bytes in h5py); other writers use variable-length str
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
