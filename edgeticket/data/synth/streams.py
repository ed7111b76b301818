"""Where the generator's random numbers come from, so that a frame depends on (seed, views, i) alone.

Each room has its own stream, and render_frame splits it into three (geometry, look, sensor
noise), so textures can be redrawn without moving the geometry. A room's first view is its own
camera; every further view of it has a stream of its own (the camera's pose and the sensor
noise). The split, the redrawn textures and the views draw from streams of their own, kept
apart from every room's by a tag.
"""

from __future__ import annotations

import numpy as np

SPLIT_TAG = 0x5B117  # keeps the split's random stream apart from every frame's
LOOK_TAG = 0x7E47
VIEW_TAG = 0x71E3


def frame_rng(seed: int, i: int) -> np.random.Generator:
    """The random stream of frame ``i``: it depends on (seed, i) alone."""
    return np.random.default_rng([int(seed), int(i)])


def room_and_view(i: int, views: int) -> tuple[int, int]:
    """Frame ``i`` of a set of ``views`` views per room is view ``v`` of room ``r``: (r, v)."""
    return divmod(int(i), int(views))


def view_rng(seed: int, room: int, view: int) -> np.random.Generator | None:
    """The stream of a room's further view (its camera pose and sensor noise); None for view 0,
    which is the room's own camera (so one view per room gives exactly the rooms of old)."""
    return None if view == 0 else np.random.default_rng([int(seed), int(room), int(view), VIEW_TAG])


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    # a Python float, not numpy's: float32 arithmetic with it stays float32 (NEP 50)
    return float(rng.uniform(lo, hi))
