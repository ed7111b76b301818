"""A frame's look, drawn from its own stream: materials, the textures they paint, and lights.

Every material slot of the scene (its role: floor, wall, wood, fabric, ...) gets a colour
from the role's range and a pattern (flat, stripes, checker, value noise, wood grain, tiles).
The look stream is separate from the geometry stream, so a frame can be re-rendered with
other textures, or none, and keep bit-identical depth.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np

from edgeticket.data.synth.scene import Scene
from edgeticket.data.synth.streams import uniform


@dataclass(frozen=True)
class Material:
    """A surface's pattern: two colours, a kind of pattern and its scale and orientation."""

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
class Lights:
    """A ceiling point light, a sun through the windows, ambient light and the sensor's exposure."""

    point: tuple[float, float, float]
    point_rgb: np.ndarray
    falloff: float  # 1 / r^2 of the point light's reach
    sun_dir: tuple[float, float, float]  # unit vector towards the light
    sun_rgb: np.ndarray
    ambient_rgb: np.ndarray
    exposure: float
    noise_sigma: float  # in 8-bit levels


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
    rgb = colorsys.hsv_to_rgb(uniform(rng, h0, h1), uniform(rng, s0, s1), uniform(rng, v0, v1))
    return np.array(rgb, np.float32)


def _sample_material(rng, role) -> Material:
    kinds, probs = zip(*_ROLE_KINDS[role], strict=True)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(probs) / sum(probs)))]
    a = _colour(rng, role)
    if kind in ("flat", "wood", "noise") and rng.random() < 0.7:
        b = np.clip(a * uniform(rng, 0.45, 0.85), 0, 1).astype(np.float32)
    elif kind == "tiles":
        b = np.full(3, uniform(rng, 0.15, 0.9), np.float32)
    else:
        b = _colour(rng, role)
    angle = uniform(rng, 0, math.pi) if rng.random() < 0.5 else int(rng.integers(2)) * math.pi / 2
    param = {  # stripe duty cycle, wood rings per metre, brick courses or a grid
        "stripes": uniform(rng, 0.2, 0.7),
        "wood": uniform(rng, 3.0, 12.0),
        "tiles": float(rng.random() < 0.5),
    }
    return Material(
        kind=kind, a=a, b=b, scale=uniform(rng, *_KIND_SCALE[kind]),
        cos=math.cos(angle), sin=math.sin(angle), offset=(uniform(rng, 0, 64), uniform(rng, 0, 64)),
        param=param.get(kind, 0.0), table=rng.random((64, 64), dtype=np.float32),
    )


def sample_look(rng, scene: Scene) -> tuple[list[Material], Lights]:
    """A material per material slot of the scene, and its lights, from the look stream."""
    materials = [_sample_material(rng, role) for role in scene.roles]
    width, height, depth = scene.room
    u = functools.partial(uniform, rng)
    warm = np.array([1.0, u(0.85, 1.0), u(0.7, 0.95)], np.float32)
    sun = np.array([u(-1, 1), u(0.2, 1.0), u(-1, 1)])
    sun /= np.linalg.norm(sun)
    lights = Lights(
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


def material_albedo(m: Material, u, v, textures: bool) -> np.ndarray:
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
