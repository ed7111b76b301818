"""The furniture catalogue: crates, tables, chairs, cabinets, shelves, beds, sofas and more.

A builder draws one piece's dimensions from the geometry stream and returns it in the piece's
own frame (origin on the floor at its centre, back towards local +z):

- parts: (kind, centre, size, slot) solids, in scene.Prim's kind and size conventions, where
  slot indexes the piece's own material roles;
- roles: one material role per slot ("wood", "fabric", ...), which the look stream colours;
- (half x, half z): the footprint that placement keeps clear of other pieces;
- the chance that the piece stands against a wall rather than out in the room.
"""

from __future__ import annotations

import functools

import numpy as np

from edgeticket.data.synth.streams import uniform


def _box_part(x, y0, z, w, h, d, slot):
    """A box of width w (x), height h and depth d (z) whose bottom is at y0."""
    return ("box", (x, y0 + h / 2, z), (w / 2, h / 2, d / 2), slot)


def _build_crates(rng, ceiling):
    u = functools.partial(uniform, rng)
    w, d, h = u(0.25, 0.9), u(0.25, 0.9), u(0.2, 0.9)
    parts = [_box_part(0, 0, 0, w, h, d, 0)]
    if rng.random() < 0.4:
        w2, d2, h2 = u(0.15, w), u(0.15, d), u(0.1, 0.5)
        x2, z2 = u(-(w - w2) / 2, (w - w2) / 2), u(-(d - d2) / 2, (d - d2) / 2)
        parts.append(_box_part(x2, h, z2, w2, h2, d2, 1))
    return parts, ["solid", "solid"], (w / 2, d / 2), 0.3


def _build_table(rng, ceiling):
    u = functools.partial(uniform, rng)
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
    u = functools.partial(uniform, rng)
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
    u = functools.partial(uniform, rng)
    w, d, h = u(0.5, 1.4), u(0.35, 0.6), u(0.7, min(2.1, ceiling - 0.2))
    parts = [_box_part(0, 0, 0.01, w, h, d - 0.02, 0)]
    doors = 1 if w < 0.8 else 2
    dw = (w - 0.04) / doors - 0.01
    for k in range(doors):
        x = -w / 2 + 0.02 + (k + 0.5) * (w - 0.04) / doors
        parts.append(_box_part(x, 0.05, -d / 2 + 0.01, dw, h - 0.1, 0.02, 1))
    return parts, ["wood", "wood"], (w / 2, d / 2), 0.8


def _build_shelf(rng, ceiling):
    u = functools.partial(uniform, rng)
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
    u = functools.partial(uniform, rng)
    w, length, h = u(0.9, 1.9), u(1.9, 2.1), u(0.25, 0.4)
    parts = [
        _box_part(0, 0, 0, w, h, length, 0),
        _box_part(0, h, -0.02, w - 0.04, u(0.15, 0.25), length - 0.1, 1),
        _box_part(0, 0, length / 2 + 0.03, w, u(0.8, 1.2), 0.06, 0),
        _box_part(0, h + 0.2, length / 2 - 0.3, min(0.6, w - 0.2), 0.12, 0.35, 2),
    ]
    return parts, ["wood", "fabric", "fabric"], (w / 2, length / 2 + 0.06), 0.9


def _build_sofa(rng, ceiling):
    u = functools.partial(uniform, rng)
    w, d, seat, back, arm = u(1.4, 2.4), u(0.8, 1.0), u(0.38, 0.46), u(0.75, 0.9), u(0.15, 0.22)
    parts = [
        _box_part(0, 0, 0.1, w - 2 * arm, seat, d - 0.2, 0),
        _box_part(0, 0, d / 2 - 0.1, w, back, 0.2, 0),
        _box_part(-(w / 2 - arm / 2), 0, 0, arm, u(0.55, 0.65), d, 1),
        _box_part(w / 2 - arm / 2, 0, 0, arm, u(0.55, 0.65), d, 1),
    ]
    return parts, ["fabric", "fabric"], (w / 2, d / 2), 0.7


def _build_cylinder(rng, ceiling):
    u = functools.partial(uniform, rng)
    r, h = u(0.12, 0.4), u(0.3, 1.1)
    return [("cylinder", (0.0, 0.0, 0.0), (r, h, 0.0), 0)], ["solid"], (r, r), 0.1


def _build_ball(rng, ceiling):
    r = uniform(rng, 0.1, 0.35)
    return [("sphere", (0.0, r, 0.0), (r, 0.0, 0.0), 0)], ["solid"], (r, r), 0.1


def _build_lamp(rng, ceiling):
    u = functools.partial(uniform, rng)
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


def sample_furniture(rng: np.random.Generator, ceiling: float):
    """A piece drawn by kind (crates are the commonest, beds and balls the rarest), then built."""
    builder, _ = _BUILDERS[_KINDS[int(rng.choice(len(_KINDS), p=_KIND_P))]]
    return builder(rng, ceiling)
