"""Procedural indoor rooms in NYU Depth v2's official layout: the embedded default dataset.

A frame is a room box (floor, four walls, ceiling) seen with NYU's Kinect intrinsics from a
camera inside it, furnished with 3 to 8 solids standing on the floor (crates, tables, chairs,
cabinets, shelves, beds, sofas, floor lamps, cylinders, balls) plus a rug, pictures, windows
and doors on the walls. One ray per pixel is cast for all pixels at once with numpy.

Depth is the z-distance along the optical axis, as a depth camera reports it, and comes from
geometry alone. Textures and lights come from a random stream of their own, so they only
colour the image: the same geometry re-rendered with other textures has bit-identical depth.

Frame i depends on (seed, i) alone, so frames rendered in parallel, or only some of them, are
the same frames. ``write_synthetic`` writes ``nyu_depth_v2_labeled.mat`` (HDF5 behind MATLAB's
512-byte v7.3 header, ``images`` (N, 3, 640, 480) uint8 and ``depths`` (N, 640, 480) float32, as
MATLAB's column-major order shows through in h5py) and ``splits.mat``, so the real readers in
``edgeticket.data.nyu`` read it unchanged.
"""

from __future__ import annotations

import colorsys
import functools
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeticket.data.nyu import FRAME_H, FRAME_W, LABELED_FILE, MAX_DEPTH
from edgeticket.data.splits import OFFICIAL_FRAMES, SPLITS_FILE, write_splits_mat
from edgeticket.errors import UserError
from edgeticket.fsio import atomic_path
from edgeticket.progress import track

PRESETS: dict[str, int] = {"small": 64, "nyu": OFFICIAL_FRAMES}
MIN_FRAMES = 8
MAX_FRAMES = 65535  # splits.mat holds 1-based indices as uint16
NYU_INTRINSICS = (518.857901, 519.469611, 325.582449, 253.736166)  # fx, fy, cx, cy at 640x480
TRAIN_FRACTION = 795 / 1449  # the official split's share of train frames
MIN_DEPTH = 1e-3
MAT73_USERBLOCK = 512

_SPLIT_TAG = 0x5B117  # keeps the split's random stream apart from every frame's
_LOOK_TAG = 0x7E47
_EPS = 1e-4
_NEAR = 0.01
_ROOM_SURFACES = 6  # floor, ceiling, wall x=0, wall x=W, wall z=0, wall z=D


# --- scene description ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Prim:
    """A solid: a yaw-rotated box, a vertical cylinder or a sphere."""

    kind: str  # "box" | "cylinder" | "sphere"
    centre: tuple[float, float, float]  # box, sphere: centre; cylinder: centre of its base
    size: tuple[float, float, float]  # box: half sizes; cylinder: (r, height, 0); ball: (r, 0, 0)
    yaw: float  # about the vertical axis; the box's local x, z map to world (c, -s), (s, c)
    mat: int


@dataclass(frozen=True)
class _Scene:
    room: tuple[float, float, float]  # width (x), height (y, up), depth (z)
    origin: tuple[float, float, float]
    rot: np.ndarray  # camera-to-world; columns are the camera's right, down and forward axes
    prims: list[_Prim]
    room_mats: tuple[int, ...]  # one per room surface, in _ROOM_SURFACES order
    roles: list[str]  # one per material slot
    footprints: list[tuple[float, float, float, float, float]]  # x, z, yaw, half x, half z


@dataclass(frozen=True)
class _Material:
    kind: str  # flat | stripes | checker | noise | wood | tiles
    a: np.ndarray
    b: np.ndarray
    scale: float  # metres per pattern period
    cos: float
    sin: float
    offset: tuple[float, float]
    param: float
    table: np.ndarray  # 64x64 lattice for value noise


@dataclass(frozen=True)
class _Lights:
    point: tuple[float, float, float]
    point_rgb: np.ndarray
    falloff: float  # 1 / r^2 of the point light's reach
    sun_dir: tuple[float, float, float]  # unit vector towards the light
    sun_rgb: np.ndarray
    ambient_rgb: np.ndarray
    exposure: float
    noise_sigma: float  # in 8-bit levels


# --- public API -----------------------------------------------------------------------------


def camera_intrinsics(height: int = FRAME_H, width: int = FRAME_W) -> tuple[float, ...]:
    """NYU's Kinect colour intrinsics (fx, fy, cx, cy) scaled to a height x width image."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sx, sy = width / FRAME_W, height / FRAME_H
    if sx == 1.0 and sy == 1.0:
        return fx, fy, cx, cy
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def frame_rng(seed: int, i: int) -> np.random.Generator:
    """The random stream of frame ``i``: it depends on (seed, i) alone."""
    return np.random.default_rng([int(seed), int(i)])


def render_frame(
    rng: np.random.Generator,
    height: int = FRAME_H,
    width: int = FRAME_W,
    *,
    textures: bool = True,
    texture_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One room: (HxWx3 uint8 RGB, HxW float32 depth in metres, in (0, 10]).

    ``textures=False`` paints every surface in its base colour; ``texture_seed`` draws other
    textures and lights. Neither touches the geometry, so depth stays bit-identical.
    """
    if height < 8 or width < 8:
        raise ValueError(f"render_frame: {height}x{width} is too small; use at least 8x8.")
    geo_seed, look_seed, noise_seed = (int(v) for v in rng.integers(0, 2**62, size=3))
    scene = _sample_scene(np.random.default_rng(geo_seed))
    look = look_seed if texture_seed is None else [int(texture_seed), _LOOK_TAG]
    materials, lights = _sample_look(np.random.default_rng(look), scene)
    noise_rng = np.random.default_rng(noise_seed)
    return _render(scene, materials, lights, height, width, textures, noise_rng)


def render_frames(
    n: int, seed: int, height: int = FRAME_H, width: int = FRAME_W
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames 0..n-1 of the set for ``seed``, one at a time."""
    for i in range(n):
        yield render_frame(frame_rng(seed, i), height, width)


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based (train, test): the official split's share (~55%) of train, permuted by seed."""
    n_train = min(max(int(round(n * TRAIN_FRACTION)), 1), n - 1)
    perm = np.random.default_rng([int(seed), _SPLIT_TAG]).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def write_synthetic(
    out: Path, n: int, seed: int = 0, progress: bool = True, workers: int | None = None
) -> dict:
    """Render n rooms into ``out`` as ``nyu_depth_v2_labeled.mat`` plus ``splits.mat``.

    Frames stream from the workers into the file as they are rendered. The .mat is written to
    a temporary file and renamed into place last, so a killed run never leaves a partial one.
    """
    out = Path(out)
    n = _checked_n(n)
    if int(seed) < 0:
        raise UserError(f"--seed {seed}: give a seed >= 0.")
    if workers is None:
        workers = os.cpu_count() or 1
    if int(workers) < 1:
        raise UserError(f"--workers {workers}: give at least 1 worker process.")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; pass a folder to write the synthetic dataset into.")
    workers = min(int(workers), n)
    train, test = synthetic_split(n, seed)
    start = time.perf_counter()
    with atomic_path(out / LABELED_FILE) as tmp:
        _write_labeled(tmp, n, int(seed), progress, workers)
        write_splits_mat(out / SPLITS_FILE, train, test)
    seconds = time.perf_counter() - start
    return {
        "path": str(out),
        "n": n,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "seed": int(seed),
        "workers": workers,
        "seconds": round(seconds, 3),
        "frames_per_s": round(n / seconds, 3) if seconds > 0 else float("inf"),
    }


def mat73_header(created: str | None = None) -> bytes:
    """The 512-byte user block MATLAB puts in front of a v7.3 (HDF5) MAT-file."""
    created = created or time.strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    head = text.encode("ascii")[:116].ljust(116, b" ")
    # bytes 116-123: no subsystem data; 124-127: version 0x0200 and the 'IM' endian mark
    return head + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * (MAT73_USERBLOCK - 128)


# --- writing --------------------------------------------------------------------------------


def _checked_n(n: int) -> int:
    if int(n) != n or not MIN_FRAMES <= n <= MAX_FRAMES:
        raise UserError(
            f"--n {n}: give a whole number of frames from {MIN_FRAMES} to {MAX_FRAMES}, "
            "so that both train and test get frames."
        )
    return int(n)


def _write_labeled(tmp: Path, n: int, seed: int, progress: bool, workers: int) -> None:
    import h5py

    with h5py.File(tmp, "w", userblock_size=MAT73_USERBLOCK) as f:
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
        frames = _frames(n, seed, workers)
        frames = track(frames, "rendering rooms", total=n, enabled=progress)
        for i, (rgb, depth) in enumerate(frames):
            images[i] = rgb.transpose(2, 1, 0)
            depths[i] = depth.T
    with open(tmp, "r+b") as f:
        f.write(mat73_header())


def _render_job(seed: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    return render_frame(frame_rng(seed, i))


def _frames(n: int, seed: int, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames in order; with workers > 1, at most 2 per worker are in flight at a time."""
    if workers <= 1:
        yield from render_frames(n, seed)
        return
    # spawn, not fork: the caller may hold torch's thread pools, which do not survive a fork
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        nxt = 0
        while nxt < n and len(pending) < 2 * workers:
            pending.append(pool.apply_async(_render_job, (seed, nxt)))
            nxt += 1
        while pending:
            frame = pending.popleft().get()
            if nxt < n:
                pending.append(pool.apply_async(_render_job, (seed, nxt)))
                nxt += 1
            yield frame


# --- scene sampling (geometry stream) -------------------------------------------------------


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world for a camera looking along +z, turned by yaw, pitched down, rolled."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    flip = np.diag([-1.0, -1.0, 1.0])  # camera x right and y down; world y up, right-handed
    return ry @ rx @ rz @ flip


def _box_part(x, y0, z, w, h, d, slot):
    """A box of width w (x), height h and depth d (z) whose bottom is at y0."""
    return ("box", (x, y0 + h / 2, z), (w / 2, h / 2, d / 2), slot)


def _build_crates(rng, ceiling):
    u = functools.partial(_u, rng)
    w, d, h = u(0.25, 0.9), u(0.25, 0.9), u(0.2, 0.9)
    parts = [_box_part(0, 0, 0, w, h, d, 0)]
    if rng.random() < 0.4:
        w2, d2, h2 = u(0.15, w), u(0.15, d), u(0.1, 0.5)
        x2, z2 = u(-(w - w2) / 2, (w - w2) / 2), u(-(d - d2) / 2, (d - d2) / 2)
        parts.append(_box_part(x2, h, z2, w2, h2, d2, 1))
    return parts, ["solid", "solid"], (w / 2, d / 2), 0.3


def _build_table(rng, ceiling):
    u = functools.partial(_u, rng)
    w, d, h, top, leg = u(0.8, 1.8), u(0.6, 1.0), u(0.68, 0.78), u(0.03, 0.06), u(0.04, 0.08)
    parts = [_box_part(0, h - top, 0, w, top, d, 0)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(_box_part(sx * (w / 2 - 0.04 - leg / 2), 0, sz * (d / 2 - 0.04 - leg / 2),
                                   leg, h - top, leg, 1))
    if rng.random() < 0.5:
        bw, bd, bh = u(0.1, 0.4), u(0.1, 0.4), u(0.05, 0.35)
        parts.append(_box_part(u(-w / 4, w / 4), h, u(-d / 4, d / 4), bw, bh, bd, 2))
    return parts, ["wood", "wood", "solid"], (w / 2, d / 2), 0.2


def _build_chair(rng, ceiling):
    u = functools.partial(_u, rng)
    s, h, back, leg = u(0.4, 0.5), u(0.42, 0.48), u(0.35, 0.5), u(0.03, 0.05)
    parts = [
        _box_part(0, h - 0.05, 0, s, 0.05, s, 0),
        _box_part(0, h, s / 2 - 0.02, s, back, 0.04, 0),
    ]
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * (s / 2 - leg / 2), sz * (s / 2 - leg / 2)
            parts.append(_box_part(x, 0, z, leg, h - 0.05, leg, 1))
    return parts, ["wood", "metal"], (s / 2, s / 2), 0.1


def _build_cabinet(rng, ceiling):
    u = functools.partial(_u, rng)
    w, d, h = u(0.5, 1.4), u(0.35, 0.6), u(0.7, min(2.1, ceiling - 0.2))
    parts = [_box_part(0, 0, 0.01, w, h, d - 0.02, 0)]
    doors = 1 if w < 0.8 else 2
    dw = (w - 0.04) / doors - 0.01
    for k in range(doors):
        x = -w / 2 + 0.02 + (k + 0.5) * (w - 0.04) / doors
        parts.append(_box_part(x, 0.05, -d / 2 + 0.01, dw, h - 0.1, 0.02, 1))
    return parts, ["wood", "wood"], (w / 2, d / 2), 0.8


def _build_shelf(rng, ceiling):
    u = functools.partial(_u, rng)
    w, d, h, t = u(0.6, 1.2), u(0.25, 0.4), u(1.0, min(2.0, ceiling - 0.3)), 0.025
    parts = [_box_part(sx * (w / 2 - t / 2), 0, 0, t, h, d, 0) for sx in (-1, 1)]
    parts.append(_box_part(0, 0, d / 2 - 0.005, w - 2 * t, h, 0.01, 0))
    levels = int(rng.integers(3, 6))
    for k in range(levels):
        y = k * (h - t) / (levels - 1)
        parts.append(_box_part(0, y, 0, w - 2 * t, t, d - 0.01, 0))
        gap = (h - t) / (levels - 1) - t
        if k < levels - 1 and rng.random() < 0.6:
            bw, bh = u(0.1, w - 2 * t - 0.05), u(0.3, 0.9) * gap
            parts.append(_box_part(u(-(w - 2 * t - bw) / 2, (w - 2 * t - bw) / 2), y + t, 0.005,
                                   bw, bh, d - 0.06, 1))
    return parts, ["wood", "fabric"], (w / 2, d / 2), 0.85


def _build_bed(rng, ceiling):
    u = functools.partial(_u, rng)
    w, length, h = u(0.9, 1.9), u(1.9, 2.1), u(0.25, 0.4)
    parts = [
        _box_part(0, 0, 0, w, h, length, 0),
        _box_part(0, h, -0.02, w - 0.04, u(0.15, 0.25), length - 0.1, 1),
        _box_part(0, 0, length / 2 + 0.03, w, u(0.8, 1.2), 0.06, 0),
        _box_part(0, h + 0.2, length / 2 - 0.3, min(0.6, w - 0.2), 0.12, 0.35, 2),
    ]
    return parts, ["wood", "fabric", "fabric"], (w / 2, length / 2 + 0.06), 0.9


def _build_sofa(rng, ceiling):
    u = functools.partial(_u, rng)
    w, d, seat, back, arm = u(1.4, 2.4), u(0.8, 1.0), u(0.38, 0.46), u(0.75, 0.9), u(0.15, 0.22)
    parts = [
        _box_part(0, 0, 0.1, w - 2 * arm, seat, d - 0.2, 0),
        _box_part(0, 0, d / 2 - 0.1, w, back, 0.2, 0),
        _box_part(-(w / 2 - arm / 2), 0, 0, arm, u(0.55, 0.65), d, 1),
        _box_part(w / 2 - arm / 2, 0, 0, arm, u(0.55, 0.65), d, 1),
    ]
    return parts, ["fabric", "fabric"], (w / 2, d / 2), 0.7


def _build_cylinder(rng, ceiling):
    u = functools.partial(_u, rng)
    r, h = u(0.12, 0.4), u(0.3, 1.1)
    return [("cylinder", (0.0, 0.0, 0.0), (r, h, 0.0), 0)], ["solid"], (r, r), 0.1


def _build_ball(rng, ceiling):
    r = _u(rng, 0.1, 0.35)
    return [("sphere", (0.0, r, 0.0), (r, 0.0, 0.0), 0)], ["solid"], (r, r), 0.1


def _build_lamp(rng, ceiling):
    u = functools.partial(_u, rng)
    h, shade, sh = u(1.3, 1.8), u(0.14, 0.26), u(0.2, 0.35)
    parts = [
        ("cylinder", (0.0, 0.0, 0.0), (0.15, 0.03, 0.0), 0),
        ("cylinder", (0.0, 0.03, 0.0), (0.015, h - 0.03 - sh / 2, 0.0), 0),
        ("cylinder", (0.0, h - sh, 0.0), (shade, sh, 0.0), 1),
    ]
    r = max(0.15, shade)
    return parts, ["metal", "fabric"], (r, r), 0.4


_BUILDERS = {
    "crates": (_build_crates, 0.2),
    "table": (_build_table, 0.12),
    "chair": (_build_chair, 0.12),
    "cabinet": (_build_cabinet, 0.12),
    "shelf": (_build_shelf, 0.1),
    "bed": (_build_bed, 0.06),
    "sofa": (_build_sofa, 0.08),
    "cylinder": (_build_cylinder, 0.08),
    "ball": (_build_ball, 0.06),
    "lamp": (_build_lamp, 0.06),
}
_KINDS = list(_BUILDERS)
_KIND_P = np.array([p for _, p in _BUILDERS.values()]) / sum(p for _, p in _BUILDERS.values())


def _fp_radius(fp, nx: float, nz: float) -> float:
    c, s = math.cos(fp[2]), math.sin(fp[2])
    return fp[3] * abs(c * nx - s * nz) + fp[4] * abs(s * nx + c * nz)


def _footprints_overlap(a, b, margin: float = 0.05) -> bool:
    """Separating-axis test for two yaw-rotated rectangles on the floor."""
    dx, dz = b[0] - a[0], b[1] - a[1]
    for yaw in (a[2], b[2]):
        c, s = math.cos(yaw), math.sin(yaw)
        for nx, nz in ((c, -s), (s, c)):
            if abs(dx * nx + dz * nz) > _fp_radius(a, nx, nz) + _fp_radius(b, nx, nz) + margin:
                return False
    return True


def _inside_room(fp, width: float, depth: float) -> bool:
    x, z, yaw, hx, hz = fp
    c, s = math.cos(yaw), math.sin(yaw)
    for sx in (-1, 1):
        for sz in (-1, 1):
            wx, wz = x + c * sx * hx + s * sz * hz, z - s * sx * hx + c * sz * hz
            if not (1e-3 <= wx <= width - 1e-3 and 1e-3 <= wz <= depth - 1e-3):
                return False
    return True


def _place(rng, wall_p, hx, hz, room, cam, cam_yaw, taken):
    """A free floor pose (x, z, yaw, hx, hz), against a wall or in view, or None."""
    width, _, depth = room
    u = functools.partial(_u, rng)
    for _ in range(30):
        if rng.random() < wall_p:
            wall, gap = int(rng.integers(3)), u(0.01, 0.06)
            along = width if wall == 2 else depth
            if along < 2 * hx + 0.02:
                continue
            t = u(hx + 0.01, along - hx - 0.01)
            # the object's back (local +z) faces the wall
            x, z, yaw = {
                0: (hz + gap, t, -math.pi / 2),
                1: (width - hz - gap, t, math.pi / 2),
                2: (t, depth - hz - gap, 0.0),
            }[wall]
        else:
            a, r = cam_yaw + u(-0.55, 0.55), u(1.0, 6.0)
            x, z = cam[0] + r * math.sin(a), cam[1] + r * math.cos(a)
            if rng.random() < 0.4:
                yaw = u(0.0, 2 * math.pi)
            else:
                yaw = int(rng.integers(4)) * math.pi / 2 + u(-0.15, 0.15)
        fp = (x, z, yaw, hx, hz)
        if _inside_room(fp, width, depth) and not any(_footprints_overlap(fp, o) for o in taken):
            return fp
    return None


def _decor(rng, room, roles) -> list[_Prim]:
    """A rug, and pictures, windows and doors on the walls: thin boxes."""
    width, height, depth = room
    u = functools.partial(_u, rng)
    prims = []

    def slot(role):
        roles.append(role)
        return len(roles) - 1

    if rng.random() < 0.5:
        w, d = u(1.0, min(3.0, width - 0.4)), u(0.8, min(2.5, depth - 0.4))
        x, z = u(w / 2 + 0.1, width - w / 2 - 0.1), u(d / 2 + 0.1, depth - d / 2 - 0.1)
        prims.append(_Prim("box", (x, 0.006, z), (w / 2, 0.006, d / 2), 0.0, slot("fabric")))
    for _ in range(int(rng.integers(0, 4))):
        wall = int(rng.integers(3))
        what = ("picture", "window", "door")[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        along = width if wall == 2 else depth
        if what == "door":
            w, h, y0, thick = u(0.8, 0.95), u(1.95, min(2.1, height - 0.1)), 0.0, 0.04
        elif what == "window":
            w, h, y0, thick = u(0.8, 1.6), u(1.0, 1.3), u(0.8, 1.0), 0.05
        else:
            w, h, y0, thick = u(0.3, 1.2), u(0.3, 0.9), u(1.0, 1.5), 0.03
        if along < w + 0.2:
            continue
        t, yc = u(w / 2 + 0.05, along - w / 2 - 0.05), y0 + h / 2
        layers = [(thick, w, h, slot("window" if what == "window" else "wood"))]
        if what == "picture":
            layers.append((thick + 0.01, w - 0.08, h - 0.08, slot("decor")))
        for th, lw, lh, mat in layers:
            if wall == 2:
                half = (lw / 2, lh / 2, th / 2)
                prims.append(_Prim("box", (t, yc, depth - th / 2), half, 0.0, mat))
            else:
                x = th / 2 if wall == 0 else width - th / 2
                prims.append(_Prim("box", (x, yc, t), (th / 2, lh / 2, lw / 2), 0.0, mat))
    return prims


def _sample_scene(rng: np.random.Generator) -> _Scene:
    u = functools.partial(_u, rng)
    # most rooms are small, as in NYU, whose median depth is under 3 m
    room = (u(3.0, 8.0), u(2.4, 3.2), 3.0 + 7.0 * float(rng.beta(1.3, 2.2)))
    width, height, depth = room
    roles: list[str] = ["floor", "ceiling"]
    if rng.random() < 0.7:
        roles.append("wall")
        walls = (2, 2, 2, 2)
    else:
        roles.extend(["wall"] * 4)
        walls = (2, 3, 4, 5)
    room_mats = (0, 1, *walls)

    cam = (width / 2 + u(-0.3, 0.3) * width, u(0.25, 0.45 * depth))
    cam_y = u(1.0, 1.7)
    cam_yaw = math.radians(u(-30.0, 30.0))
    rot = _camera_rotation(cam_yaw, math.radians(u(-3.0, 15.0)), math.radians(u(-4.0, 4.0)))

    prims: list[_Prim] = []
    footprints: list = []
    camera_fp = (cam[0], cam[1], 0.0, 0.45, 0.45)
    for _ in range(int(rng.integers(3, 9))):
        builder, _ = _BUILDERS[_KINDS[int(rng.choice(len(_KINDS), p=_KIND_P))]]
        parts, part_roles, (hx, hz), wall_p = builder(rng, height)
        fp = _place(rng, wall_p, hx, hz, room, cam, cam_yaw, [camera_fp, *footprints])
        if fp is None:
            continue
        x, z, yaw = fp[0], fp[1], fp[2]
        c, s = math.cos(yaw), math.sin(yaw)
        base = len(roles)
        roles.extend(part_roles)
        for kind, (lx, ly, lz), size, k in parts:
            centre = (x + c * lx + s * lz, ly, z - s * lx + c * lz)
            prims.append(_Prim(kind, centre, tuple(float(v) for v in size), yaw, base + k))
        footprints.append(fp)
    prims.extend(_decor(rng, room, roles))
    return _Scene(room, (cam[0], cam_y, cam[1]), rot, prims, room_mats, roles, footprints)


# --- look sampling (texture and light stream) -----------------------------------------------

_ROLE_KINDS = {
    "floor": (("wood", 0.35), ("tiles", 0.25), ("noise", 0.25), ("checker", 0.15)),
    "wall": (("flat", 0.45), ("noise", 0.2), ("stripes", 0.2), ("tiles", 0.15)),
    "ceiling": (("flat", 0.8), ("noise", 0.2)),
    "wood": (("wood", 0.6), ("flat", 0.2), ("noise", 0.2)),
    "fabric": (("noise", 0.35), ("stripes", 0.25), ("checker", 0.2), ("flat", 0.2)),
    "solid": (("flat", 0.3), ("noise", 0.2), ("stripes", 0.15), ("checker", 0.15), ("wood", 0.2)),
    "metal": (("flat", 0.7), ("noise", 0.3)),
    "decor": (("stripes", 0.3), ("checker", 0.2), ("noise", 0.3), ("wood", 0.2)),
    "window": (("flat", 0.6), ("noise", 0.4)),
}
# hue, saturation and value ranges
_ROLE_HSV = {
    "floor": ((0.04, 0.12), (0.15, 0.7), (0.25, 0.75)),
    "wall": ((0.0, 1.0), (0.0, 0.25), (0.55, 0.95)),
    "ceiling": ((0.0, 1.0), (0.0, 0.08), (0.8, 0.97)),
    "wood": ((0.04, 0.11), (0.35, 0.75), (0.2, 0.7)),
    "fabric": ((0.0, 1.0), (0.1, 0.8), (0.15, 0.9)),
    "solid": ((0.0, 1.0), (0.05, 0.8), (0.15, 0.9)),
    "metal": ((0.0, 1.0), (0.0, 0.15), (0.3, 0.85)),
    "decor": ((0.0, 1.0), (0.2, 0.9), (0.1, 0.95)),
    "window": ((0.5, 0.62), (0.0, 0.25), (0.9, 1.0)),
}
_KIND_SCALE = {
    "flat": (0.2, 0.6), "stripes": (0.05, 0.4), "checker": (0.1, 0.6), "noise": (0.05, 0.5),
    "wood": (0.3, 1.0), "tiles": (0.15, 0.6),
}


def _colour(rng, role) -> np.ndarray:
    (h0, h1), (s0, s1), (v0, v1) = _ROLE_HSV[role]
    rgb = colorsys.hsv_to_rgb(_u(rng, h0, h1), _u(rng, s0, s1), _u(rng, v0, v1))
    return np.array(rgb, np.float32)


def _sample_material(rng, role) -> _Material:
    kinds, probs = zip(*_ROLE_KINDS[role], strict=True)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(probs) / sum(probs)))]
    a = _colour(rng, role)
    if kind in ("flat", "wood", "noise") and rng.random() < 0.7:
        b = np.clip(a * _u(rng, 0.45, 0.85), 0, 1).astype(np.float32)
    elif kind == "tiles":
        b = np.full(3, _u(rng, 0.15, 0.9), np.float32)
    else:
        b = _colour(rng, role)
    angle = _u(rng, 0, math.pi) if rng.random() < 0.5 else int(rng.integers(2)) * math.pi / 2
    param = {  # stripe duty cycle, wood rings per metre, brick courses or a grid
        "stripes": _u(rng, 0.2, 0.7),
        "wood": _u(rng, 3.0, 12.0),
        "tiles": float(rng.random() < 0.5),
    }
    return _Material(
        kind=kind, a=a, b=b, scale=_u(rng, *_KIND_SCALE[kind]),
        cos=math.cos(angle), sin=math.sin(angle), offset=(_u(rng, 0, 64), _u(rng, 0, 64)),
        param=param.get(kind, 0.0), table=rng.random((64, 64), dtype=np.float32),
    )


def _sample_look(rng, scene: _Scene) -> tuple[list[_Material], _Lights]:
    materials = [_sample_material(rng, role) for role in scene.roles]
    width, height, depth = scene.room
    u = functools.partial(_u, rng)
    warm = np.array([1.0, u(0.85, 1.0), u(0.7, 0.95)], np.float32)
    sun = np.array([u(-1, 1), u(0.2, 1.0), u(-1, 1)])
    sun /= np.linalg.norm(sun)
    lights = _Lights(
        point=(u(0.2, 0.8) * width, height - u(0.1, 0.4), u(0.25, 0.85) * depth),
        point_rgb=warm * u(0.6, 1.4),
        falloff=1.0 / u(2.5, 6.0) ** 2,
        sun_dir=tuple(float(v) for v in sun),
        sun_rgb=np.array([u(0.9, 1.0), u(0.9, 1.0), 1.0], np.float32) * u(0.0, 0.6),
        ambient_rgb=np.array([1.0, u(0.95, 1.0), u(0.9, 1.0)], np.float32) * u(0.1, 0.3),
        exposure=u(0.8, 1.05),
        noise_sigma=u(0.5, 2.5),
    )
    return materials, lights


# --- ray casting ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _pixel_rays(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray slopes per column and row; a ray is (x, y, 1), so t is z-depth."""
    fx, fy, cx, cy = camera_intrinsics(height, width)
    xs = ((np.arange(width) - cx) / fx).astype(np.float32)[None, :]
    ys = ((np.arange(height) - cy) / fy).astype(np.float32)[:, None]
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def _world_rays(rot: np.ndarray, height: int, width: int):
    xs, ys = _pixel_rays(height, width)
    r = [[float(v) for v in row] for row in rot]
    return tuple(r[k][0] * xs + r[k][1] * ys + np.float32(r[k][2]) for k in range(3))


def _hit_room(o, dx, dy, dz, room):
    """Exit distance from inside the room box, and which of its six surfaces is hit."""
    width, height, depth = room
    with np.errstate(divide="ignore"):
        tx = np.maximum(-o[0] / dx, (width - o[0]) / dx)
        ty = np.maximum(-o[1] / dy, (height - o[1]) / dy)
        tz = np.maximum(-o[2] / dz, (depth - o[2]) / dz)
    t = np.minimum(np.minimum(tx, ty), tz)
    sid = np.where(
        ty <= np.minimum(tx, tz),
        np.where(dy < 0, 0, 1),
        np.where(tx <= tz, np.where(dx < 0, 2, 3), np.where(dz < 0, 4, 5)),
    ).astype(np.int16)
    return t, sid


def _hit_box(o, dx, dy, dz, p: _Prim):
    """Slab test in the box's own frame; inf where the ray misses."""
    rx, ry, rz = o[0] - p.centre[0], o[1] - p.centre[1], o[2] - p.centre[2]
    if p.yaw == 0.0:
        lx, lz, ox, oz = dx, dz, rx, rz
    else:
        c, s = math.cos(p.yaw), math.sin(p.yaw)
        lx, lz = c * dx - s * dz, s * dx + c * dz
        ox, oz = c * rx - s * rz, s * rx + c * rz
    tn = tf = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for d, oo, h in ((lx, ox, p.size[0]), (dy, ry, p.size[1]), (lz, oz, p.size[2])):
            inv = 1.0 / d
            t1, t2 = (-h - oo) * inv, (h - oo) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            tn = lo if tn is None else np.maximum(tn, lo)
            tf = hi if tf is None else np.minimum(tf, hi)
    return np.where((tn <= tf) & (tn > _EPS), tn, np.float32(np.inf))


def _hit_cylinder(o, dx, dy, dz, p: _Prim):
    """A vertical cylinder with its caps; the camera is always outside it."""
    r, h = p.size[0], p.size[1]
    ox, oy, oz = o[0] - p.centre[0], o[1] - p.centre[1], o[2] - p.centre[2]
    inf = np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        disc = b * b - a * (ox * ox + oz * oz - r * r)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        y = oy + t * dy
        t = np.where((disc >= 0) & (t > _EPS) & (y >= 0) & (y <= h), t, inf)
        if oy > h or oy < 0:
            cap = ((h if oy > h else 0.0) - oy) / dy
            cx, cz = ox + cap * dx, oz + cap * dz
            t = np.minimum(t, np.where((cap > _EPS) & (cx * cx + cz * cz <= r * r), cap, inf))
    return t


def _hit_sphere(o, dx, dy, dz, p: _Prim):
    r = p.size[0]
    ox, oy, oz = o[0] - p.centre[0], o[1] - p.centre[1], o[2] - p.centre[2]
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - r * r)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.float32(np.inf))


_HITS = {"box": _hit_box, "cylinder": _hit_cylinder, "sphere": _hit_sphere}
_BOX_EDGES = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]


def _prim_corners(p: _Prim) -> np.ndarray:
    """The 8 corners of a box around the solid, corner k at bits (x, y, z) of k."""
    if p.kind == "box":
        hx, hy, hz = p.size
        c, s = math.cos(p.yaw), math.sin(p.yaw)
        signs = [[(k >> 2 & 1) * 2 - 1, (k >> 1 & 1) * 2 - 1, (k & 1) * 2 - 1] for k in range(8)]
        lx, ly, lz = (np.array(signs, np.float64) * np.array([hx, hy, hz])).T
        world = np.stack([c * lx + s * lz, ly, -s * lx + c * lz], 1)
        return world + np.array(p.centre)
    r = p.size[0]
    if p.kind == "cylinder":
        lo = np.array([p.centre[0] - r, p.centre[1], p.centre[2] - r])
        hi = np.array([p.centre[0] + r, p.centre[1] + p.size[1], p.centre[2] + r])
    else:
        lo, hi = np.array(p.centre) - r, np.array(p.centre) + r
    bits = [(k >> 2 & 1, k >> 1 & 1, k & 1) for k in range(8)]
    return np.array([[(hi if b[a] else lo)[a] for a in range(3)] for b in bits])


def _screen_rect(p: _Prim, scene: _Scene, height: int, width: int):
    """Rows and columns that can see the solid (its bounding box clipped at the near plane)."""
    pc = (_prim_corners(p) - np.array(scene.origin)) @ scene.rot  # world -> camera
    front = pc[:, 2] >= _NEAR
    if not front.any():
        return None
    pts = [pc[front]]
    if not front.all():
        for a, b in _BOX_EDGES:
            if front[a] != front[b]:
                f = (_NEAR - pc[a, 2]) / (pc[b, 2] - pc[a, 2])
                pts.append((pc[a] + f * (pc[b] - pc[a]))[None])
    pts = np.concatenate(pts)
    fx, fy, cx, cy = camera_intrinsics(height, width)
    us = fx * pts[:, 0] / pts[:, 2] + cx
    vs = fy * pts[:, 1] / pts[:, 2] + cy
    c0, c1 = max(int(math.floor(us.min())) - 1, 0), min(int(math.ceil(us.max())) + 2, width)
    r0, r1 = max(int(math.floor(vs.min())) - 1, 0), min(int(math.ceil(vs.max())) + 2, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _cast(scene: _Scene, rays, height: int, width: int):
    """Nearest hit per pixel: distance t along (x, y, 1) rays, i.e. z-depth, and surface id."""
    dx, dy, dz = rays
    t, sid = _hit_room(scene.origin, dx, dy, dz, scene.room)
    rects = []
    for j, p in enumerate(scene.prims):
        rect = _screen_rect(p, scene, height, width)
        rects.append(rect)
        if rect is None:
            continue
        th = _HITS[p.kind](scene.origin, dx[rect], dy[rect], dz[rect], p)
        closer = th < t[rect]
        if closer.any():
            np.copyto(t[rect], th, where=closer)
            sid[rect][closer] = _ROOM_SURFACES + j
    return t, sid, rects


# --- surfaces, textures, shading ------------------------------------------------------------


def _room_surface(k: int, px, py, pz, room):
    """Normal (constant), texture coordinates and the distance to the nearest room edge."""
    width, height, depth = room
    normal = [(0, 1, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -1)][k]
    if k < 2:
        u, v = px, pz
        edge = np.minimum(np.minimum(px, width - px), np.minimum(pz, depth - pz))
    elif k < 4:
        u, v = pz, py
        edge = np.minimum(np.minimum(py, height - py), np.minimum(pz, depth - pz))
    else:
        u, v = px, py
        edge = np.minimum(np.minimum(py, height - py), np.minimum(px, width - px))
    return normal, u, v, edge


def _prim_surface(p: _Prim, px, py, pz):
    """World normal components and texture coordinates (metres) at hit points on a solid."""
    rx, ry, rz = px - p.centre[0], py - p.centre[1], pz - p.centre[2]
    if p.kind == "box":
        c, s = math.cos(p.yaw), math.sin(p.yaw)
        lx, lz = c * rx - s * rz, s * rx + c * rz
        hx, hy, hz = p.size
        ax, ay, az = np.abs(lx) / hx, np.abs(ry) / hy, np.abs(lz) / hz
        on_x = (ax >= ay) & (ax >= az)
        on_y = ~on_x & (ay >= az)
        on_z = ~(on_x | on_y)
        nlx = np.where(on_x, np.sign(lx), 0).astype(np.float32)
        nlz = np.where(on_z, np.sign(lz), 0).astype(np.float32)
        ny = np.where(on_y, np.sign(ry), 0).astype(np.float32)
        u = np.where(on_x, lz + hz, lx + hx)
        v = np.where(on_y, lz + hz, ry + hy)
        return c * nlx + s * nlz, ny, -s * nlx + c * nlz, u, v
    r = p.size[0]
    if p.kind == "sphere":
        inv = 1.0 / r
        nx, ny, nz = rx * inv, ry * inv, rz * inv
        return nx, ny, nz, np.arctan2(nz, nx) * r, np.arcsin(np.clip(ny, -1, 1)) * r
    h = p.size[1]
    cap = (ry >= h - 1e-4) | (ry <= 1e-4)
    zero = np.zeros_like(rx)
    nx = np.where(cap, zero, rx / r)
    nz = np.where(cap, zero, rz / r)
    ny = np.where(cap, np.where(ry > h / 2, 1.0, -1.0).astype(np.float32), zero)
    u = np.where(cap, rx, np.arctan2(rz, rx) * r)
    v = np.where(cap, rz, ry)
    return nx, ny, nz, u, v


def _value_noise(table: np.ndarray, x, y):
    xi, yi = np.floor(x), np.floor(y)
    fx, fy = x - xi, y - yi
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    i0, j0 = xi.astype(np.int32) & 63, yi.astype(np.int32) & 63
    i1, j1 = (i0 + 1) & 63, (j0 + 1) & 63
    top = table[i0, j0] + (table[i1, j0] - table[i0, j0]) * fx
    bottom = table[i0, j1] + (table[i1, j1] - table[i0, j1]) * fx
    return top + (bottom - top) * fy


def _fbm(table, x, y, octaves: int):
    total, amp, norm = 0.0, 1.0, 0.0
    for k in range(octaves):
        total = total + amp * _value_noise(table, x * (2**k) + 17 * k, y * (2**k) + 31 * k)
        norm += amp
        amp *= 0.5
    return total / norm


def _albedo(m: _Material, u, v, textures: bool) -> np.ndarray:
    """(N, 3) surface colour from surface-local coordinates in metres."""
    if not textures:
        return np.broadcast_to(m.a, (len(u), 3))
    inv = 1.0 / m.scale
    s = (u * m.cos + v * m.sin) * inv + m.offset[0]
    t = (v * m.cos - u * m.sin) * inv + m.offset[1]
    if m.kind == "flat":
        w = 0.3 * _fbm(m.table, s * 4, t * 4, 2)
    elif m.kind == "stripes":
        w = (s - np.floor(s) < m.param).astype(np.float32)
    elif m.kind == "checker":
        w = ((np.floor(s) + np.floor(t)) % 2).astype(np.float32)
    elif m.kind == "noise":
        w = np.clip(_fbm(m.table, s, t, 3) * 1.6 - 0.3, 0, 1)
    elif m.kind == "wood":
        grain = 1.5 * _value_noise(m.table, s * 0.5, t * 2)
        ring = np.sqrt(t * t + (0.08 * s) ** 2) * m.param + grain
        w = (ring - np.floor(ring)) ** 3
    else:  # tiles, as a grid or as brick courses
        row = np.floor(t)
        s = s + 0.5 * (row % 2) * m.param
        col = np.floor(s)
        fs, ft = s - col, t - row
        grout = (fs < 0.04) | (ft < 0.04)
        shade = 0.85 + 0.3 * m.table[col.astype(np.int32) & 63, row.astype(np.int32) & 63]
        rgb = m.a[None, :] * shade[:, None]
        return np.where(grout[:, None], m.b[None, :], rgb)
    return m.a[None, :] + (m.b - m.a)[None, :] * w[:, None]


def _render(scene, materials, lights, height, width, textures, noise_rng):
    rays = _world_rays(scene.rot, height, width)
    t, sid, rects = _cast(scene, rays, height, width)
    o = scene.origin
    p = [o[k] + t * rays[k] for k in range(3)]
    albedo = np.empty((height, width, 3), np.float32)
    normal = [np.empty((height, width), np.float32) for _ in range(3)]
    occl = np.ones((height, width), np.float32)

    for k in range(_ROOM_SURFACES):
        mask = sid == k
        if not mask.any():
            continue
        px, py, pz = (c[mask] for c in p)
        n, u, v, edge = _room_surface(k, px, py, pz, scene.room)
        for axis in range(3):
            normal[axis][mask] = n[axis]
        albedo[mask] = _albedo(materials[scene.room_mats[k]], u, v, textures)
        shade = 1.0 - 0.35 * np.exp(-edge / 0.25)
        if k == 0:
            shade = shade * _contact_shadow(scene.footprints, px, pz)
        occl[mask] = shade

    for j, prim in enumerate(scene.prims):
        rect = rects[j]
        if rect is None:
            continue
        mask = sid[rect] == _ROOM_SURFACES + j
        if not mask.any():
            continue
        nx, ny, nz, u, v = _prim_surface(prim, *(c[rect][mask] for c in p))
        for axis, comp in enumerate((nx, ny, nz)):
            normal[axis][rect][mask] = comp
        albedo[rect][mask] = _albedo(materials[prim.mat], u, v, textures)

    light = _lighting(lights, p, normal)
    lin = albedo * light * occl[..., None]
    ref = float(np.percentile(lin[::4, ::4].mean(axis=2), 98)) or 1.0
    img = np.sqrt(np.clip(lin * (0.85 * lights.exposure / ref), 0, 1)) * 255
    img += noise_rng.standard_normal(img.shape, dtype=np.float32) * lights.noise_sigma
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    depth = np.clip(t, MIN_DEPTH, MAX_DEPTH).astype(np.float32)
    return rgb, depth


def _contact_shadow(footprints, px, pz):
    """Darkening of the floor under and around each object, strongest beneath it."""
    shade = np.ones_like(px)
    for x, z, yaw, hx, hz in footprints:
        c, s = math.cos(yaw), math.sin(yaw)
        rx, rz = px - x, pz - z
        qx = np.maximum(np.abs(c * rx - s * rz) - hx, 0)
        qz = np.maximum(np.abs(s * rx + c * rz) - hz, 0)
        shade *= 1.0 - 0.45 * np.exp(-np.sqrt(qx * qx + qz * qz) / 0.15)
    return shade


def _lighting(lights: _Lights, p, normal) -> np.ndarray:
    """Lambertian light arriving at each pixel's surface, (H, W, 3)."""
    nx, ny, nz = normal
    lx, ly, lz = (lights.point[k] - p[k] for k in range(3))
    dist2 = lx * lx + ly * ly + lz * lz
    cosine = np.maximum(nx * lx + ny * ly + nz * lz, 0) / np.sqrt(dist2)
    point = cosine / (1.0 + dist2 * lights.falloff)
    sx, sy, sz = lights.sun_dir
    sun = np.maximum(nx * sx + ny * sy + nz * sz, 0)
    return (
        lights.ambient_rgb
        + point[..., None] * lights.point_rgb
        + sun[..., None] * lights.sun_rgb
    ).astype(np.float32)
