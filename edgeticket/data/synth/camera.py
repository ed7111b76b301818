"""NYU's Kinect colour camera: its intrinsics, a pose's rotation, and the rays through pixels."""

from __future__ import annotations

import functools
import math

import numpy as np

from edgeticket.data.nyu import FRAME_H, FRAME_W

NYU_INTRINSICS = (518.857901, 519.469611, 325.582449, 253.736166)  # fx, fy, cx, cy at 640x480


def camera_intrinsics(height: int = FRAME_H, width: int = FRAME_W) -> tuple[float, ...]:
    """NYU's Kinect colour intrinsics (fx, fy, cx, cy) scaled to a height x width image."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sx, sy = width / FRAME_W, height / FRAME_H
    if sx == 1.0 and sy == 1.0:
        return fx, fy, cx, cy
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world for a camera looking along +z, turned by yaw, pitched down, rolled."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    flip = np.diag([-1.0, -1.0, 1.0])  # camera x right and y down; world y up, right-handed
    return ry @ rx @ rz @ flip


@functools.lru_cache(maxsize=8)
def _pixel_rays(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray slopes per column and row; a ray is (x, y, 1), so t is z-depth."""
    fx, fy, cx, cy = camera_intrinsics(height, width)
    xs = ((np.arange(width) - cx) / fx).astype(np.float32)[None, :]
    ys = ((np.arange(height) - cy) / fy).astype(np.float32)[:, None]
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def world_rays(rot: np.ndarray, height: int, width: int):
    """The pixels' rays in the world, (dx, dy, dz) of (H, W) each, with t still the z-depth."""
    xs, ys = _pixel_rays(height, width)
    r = [[float(v) for v in row] for row in rot]
    return tuple(r[k][0] * xs + r[k][1] * ys + np.float32(r[k][2]) for k in range(3))

