"""Where the generator's random numbers come from, so that a frame depends on (seed, i) alone.

Each frame has its own stream, and render_frame splits it into three (geometry, look, sensor
noise), so textures can be redrawn without moving the geometry. The split and the redrawn
textures draw from streams of their own, kept apart from every frame's by a tag.
"""

from __future__ import annotations

import numpy as np

SPLIT_TAG = 0x5B117  # keeps the split's random stream apart from every frame's
LOOK_TAG = 0x7E47


def frame_rng(seed: int, i: int) -> np.random.Generator:
    """The random stream of frame ``i``: it depends on (seed, i) alone."""
    return np.random.default_rng([int(seed), int(i)])


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    # a Python float, not numpy's: float32 arithmetic with it stays float32 (NEP 50)
    return float(rng.uniform(lo, hi))
