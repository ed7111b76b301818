"""Ray casting: the nearest surface along every pixel's ray, all pixels at once with numpy.

The room is hit from inside (the exit distance of its box); solids by their own tests: a
slab test in a box's frame, a quadric and its caps for a cylinder, a quadric for a sphere. A
solid is tested only on the screen rectangle its bounding box can cover, clipped at the near
plane, which keeps a furnished room's cost near that of the empty box.
"""

from __future__ import annotations

import math

import numpy as np

from edgeticket.data.synth.camera import camera_intrinsics
from edgeticket.data.synth.scene import ROOM_SURFACES, Prim, Scene

_EPS = 1e-4
_NEAR = 0.01


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


def _hit_box(o, dx, dy, dz, p: Prim):
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


def _hit_cylinder(o, dx, dy, dz, p: Prim):
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


def _hit_sphere(o, dx, dy, dz, p: Prim):
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


def _prim_corners(p: Prim) -> np.ndarray:
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


def _screen_rect(p: Prim, scene: Scene, height: int, width: int):
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


def cast(scene: Scene, rays, height: int, width: int):
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
            sid[rect][closer] = ROOM_SURFACES + j
    return t, sid, rects
