"""A frame's geometry, drawn from its geometry stream: room, camera pose, furniture and decor.

The room is a box with one corner at the origin: x across, y up, z away from the camera's
side. The first camera stands inside it at eye height, looking roughly along +z. Furniture is
placed on free floor, against a wall or in view of that camera, with footprints that never
overlap each other or the camera's; a rug and pictures, windows and doors on the walls are thin
boxes. Further views of the room (``sample_view``) stand elsewhere on free floor and look into
the room, as NYU's sequences walk through one scene. Only geometry lives here: surfaces carry
material slots (roles) that look.py colours.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from edgeticket.data.synth.camera import camera_rotation
from edgeticket.data.synth.furniture import sample_furniture
from edgeticket.data.synth.streams import uniform

ROOM_SURFACES = 6  # floor, ceiling, wall x=0, wall x=W, wall z=0, wall z=D
CAMERA_CLEARANCE = 0.45  # half the side of the floor square a camera keeps free of furniture


@dataclass(frozen=True)
class Prim:
    """A solid: a yaw-rotated box, a vertical cylinder or a sphere."""

    kind: str  # "box" | "cylinder" | "sphere"
    centre: tuple[float, float, float]  # box, sphere: centre; cylinder: centre of its base
    size: tuple[float, float, float]  # box: half sizes; cylinder: (r, height, 0); ball: (r, 0, 0)
    yaw: float  # about the vertical axis; the box's local x, z map to world (c, -s), (s, c)
    mat: int


@dataclass(frozen=True)
class Scene:
    """One frame's geometry: the room box, the camera's pose in it and the solids."""

    room: tuple[float, float, float]  # width (x), height (y, up), depth (z)
    origin: tuple[float, float, float]
    rot: np.ndarray  # camera-to-world; columns are the camera's right, down and forward axes
    prims: list[Prim]
    room_mats: tuple[int, ...]  # one per room surface, in ROOM_SURFACES order
    roles: list[str]  # one per material slot
    footprints: list[tuple[float, float, float, float, float]]  # x, z, yaw, half x, half z


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
    u = functools.partial(uniform, rng)
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


def _decor(rng, room, roles) -> list[Prim]:
    """A rug, and pictures, windows and doors on the walls: thin boxes."""
    width, height, depth = room
    u = functools.partial(uniform, rng)
    prims = []

    def slot(role):
        roles.append(role)
        return len(roles) - 1

    if rng.random() < 0.5:
        w, d = u(1.0, min(3.0, width - 0.4)), u(0.8, min(2.5, depth - 0.4))
        x, z = u(w / 2 + 0.1, width - w / 2 - 0.1), u(d / 2 + 0.1, depth - d / 2 - 0.1)
        prims.append(Prim("box", (x, 0.006, z), (w / 2, 0.006, d / 2), 0.0, slot("fabric")))
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
                prims.append(Prim("box", (t, yc, depth - th / 2), half, 0.0, mat))
            else:
                x = th / 2 if wall == 0 else width - th / 2
                prims.append(Prim("box", (x, yc, t), (th / 2, lh / 2, lw / 2), 0.0, mat))
    return prims


def _camera_tilt(rng, yaw: float) -> np.ndarray:
    """Camera-to-world for a hand-held camera turned by ``yaw``: pitched a little down, rolled a little."""
    return camera_rotation(yaw, math.radians(uniform(rng, -3.0, 15.0)), math.radians(uniform(rng, -4.0, 4.0)))


def sample_scene(rng: np.random.Generator) -> Scene:
    """A room, the camera in it, its furniture and its decor, all from the geometry stream."""
    u = functools.partial(uniform, rng)
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
    rot = _camera_tilt(rng, cam_yaw)

    prims: list[Prim] = []
    footprints: list = []
    camera_fp = (cam[0], cam[1], 0.0, CAMERA_CLEARANCE, CAMERA_CLEARANCE)
    for _ in range(int(rng.integers(3, 9))):
        parts, part_roles, (hx, hz), wall_p = sample_furniture(rng, height)
        fp = _place(rng, wall_p, hx, hz, room, cam, cam_yaw, [camera_fp, *footprints])
        if fp is None:
            continue
        x, z, yaw = fp[0], fp[1], fp[2]
        c, s = math.cos(yaw), math.sin(yaw)
        base = len(roles)
        roles.extend(part_roles)
        for kind, (lx, ly, lz), size, k in parts:
            centre = (x + c * lx + s * lz, ly, z - s * lx + c * lz)
            prims.append(Prim(kind, centre, tuple(float(v) for v in size), yaw, base + k))
        footprints.append(fp)
    prims.extend(_decor(rng, room, roles))
    return Scene(room, (cam[0], cam_y, cam[1]), rot, prims, room_mats, roles, footprints)



def sample_view(rng: np.random.Generator, scene: Scene) -> Scene:
    """The same room seen from another pose, drawn from a view's stream.

    The camera stands on free floor (its square clear of every footprint, as the first
    camera's is), away from the walls, at eye height, and looks at a piece of furniture or at
    a point of the floor at least 1.5 m away, with some jitter; the geometry is unchanged.
    """
    u = functools.partial(uniform, rng)
    width, _, depth = scene.room
    margin = CAMERA_CLEARANCE + 0.05
    x, z = scene.origin[0], scene.origin[2]  # the first camera's spot is free by construction
    for _ in range(50):
        cx, cz = u(margin, width - margin), u(margin, min(depth - margin, max(margin, 0.6 * depth)))
        fp = (cx, cz, 0.0, CAMERA_CLEARANCE, CAMERA_CLEARANCE)
        if not any(_footprints_overlap(fp, o) for o in scene.footprints):
            x, z = cx, cz
            break
    targets = [(f[0], f[1]) for f in scene.footprints if math.hypot(f[0] - x, f[1] - z) >= 1.5]
    if targets and rng.random() < 0.6:
        tx, tz = targets[int(rng.integers(len(targets)))]
    else:
        tx, tz = x + u(-0.3, 0.3) * width, depth  # into the room, towards its far wall
    yaw = math.atan2(tx - x, tz - z) + math.radians(u(-12.0, 12.0))
    return dataclasses.replace(scene, origin=(x, u(1.0, 1.7), z), rot=_camera_tilt(rng, yaw))
