"""Shading a frame: surfaces hit, textured, lit and exposed into RGB, beside their depth.

Depth is the z-distance along the optical axis, as a depth camera reports it, and comes from
the ray cast alone. Colour is albedo times light (a ceiling point light, a sun, ambient) times
soft occlusion near room edges and under furniture, exposed to the frame's brightest
surfaces, gamma-encoded, with sensor noise drawn from the frame's third stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from edgeticket.data.nyu import FRAME_H, FRAME_W, MAX_DEPTH
from edgeticket.data.synth.camera import world_rays
from edgeticket.data.synth.look import Lights, material_albedo, sample_look
from edgeticket.data.synth.raycast import cast
from edgeticket.data.synth.scene import ROOM_SURFACES, Prim, sample_scene, sample_view
from edgeticket.data.synth.streams import LOOK_TAG, frame_rng, room_and_view, view_rng

MIN_DEPTH = 1e-3


def render_frame(
    rng: np.random.Generator,
    height: int = FRAME_H,
    width: int = FRAME_W,
    *,
    textures: bool = True,
    texture_seed: int | None = None,
    view: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One view of the room of stream ``rng``: (HxWx3 uint8 RGB, HxW float32 depth in metres, in (0, 10]).

    ``view`` (a view's stream, ``view_rng``) moves the camera to another pose in the same room
    and draws that frame's sensor noise; None is the room's own first camera. ``textures=False``
    paints every surface in its base colour; ``texture_seed`` draws other textures and lights.
    Neither touches the geometry, so depth stays bit-identical.
    """
    if height < 8 or width < 8:
        raise ValueError(f"render_frame: {height}x{width} is too small; use at least 8x8.")
    geo_seed, look_seed, noise_seed = (int(v) for v in rng.integers(0, 2**62, size=3))
    scene = sample_scene(np.random.default_rng(geo_seed))
    look = look_seed if texture_seed is None else [int(texture_seed), LOOK_TAG]
    materials, lights = sample_look(np.random.default_rng(look), scene)
    if view is not None:
        scene = sample_view(view, scene)
    noise_rng = np.random.default_rng(noise_seed) if view is None else view
    return _render(scene, materials, lights, height, width, textures, noise_rng)


def render_set_frame(seed: int, i: int, views: int = 1, height: int = FRAME_H,
                     width: int = FRAME_W) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` of the set for ``seed`` with ``views`` views per room: view i % views of room i // views."""
    room, v = room_and_view(i, views)
    return render_frame(frame_rng(seed, room), height, width, view=view_rng(seed, room, v))


def render_frames(
    n: int, seed: int, height: int = FRAME_H, width: int = FRAME_W, views: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames 0..n-1 of the set for ``seed`` (``views`` views per room), one at a time."""
    for i in range(n):
        yield render_set_frame(seed, i, views, height, width)


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


def _prim_surface(p: Prim, px, py, pz):
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



def _render(scene, materials, lights, height, width, textures, noise_rng):
    rays = world_rays(scene.rot, height, width)
    t, sid, rects = cast(scene, rays, height, width)
    o = scene.origin
    p = [o[k] + t * rays[k] for k in range(3)]
    albedo = np.empty((height, width, 3), np.float32)
    normal = [np.empty((height, width), np.float32) for _ in range(3)]
    occl = np.ones((height, width), np.float32)

    for k in range(ROOM_SURFACES):
        mask = sid == k
        if not mask.any():
            continue
        px, py, pz = (c[mask] for c in p)
        n, u, v, edge = _room_surface(k, px, py, pz, scene.room)
        for axis in range(3):
            normal[axis][mask] = n[axis]
        albedo[mask] = material_albedo(materials[scene.room_mats[k]], u, v, textures)
        shade = 1.0 - 0.35 * np.exp(-edge / 0.25)
        if k == 0:
            shade = shade * _contact_shadow(scene.footprints, px, pz)
        occl[mask] = shade

    for j, prim in enumerate(scene.prims):
        rect = rects[j]
        if rect is None:
            continue
        mask = sid[rect] == ROOM_SURFACES + j
        if not mask.any():
            continue
        nx, ny, nz, u, v = _prim_surface(prim, *(c[rect][mask] for c in p))
        for axis, comp in enumerate((nx, ny, nz)):
            normal[axis][rect][mask] = comp
        albedo[rect][mask] = material_albedo(materials[prim.mat], u, v, textures)

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


def _lighting(lights: Lights, p, normal) -> np.ndarray:
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
