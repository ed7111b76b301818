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

The modules follow a frame from its seed to the file, each one step:
``streams`` (where every random number comes from), ``camera`` (intrinsics, pose, rays),
``furniture`` and ``scene`` (the geometry), ``look`` (materials, textures, lights),
``raycast`` (the nearest hit per pixel), ``shade`` (a frame's RGB and depth) and ``write``
(the set on disk). The names below are the API; the modules' other names are the package's own.
"""

from edgeticket.data.synth.camera import NYU_INTRINSICS, camera_intrinsics
from edgeticket.data.synth.shade import MIN_DEPTH, render_frame, render_frames
from edgeticket.data.synth.streams import frame_rng
from edgeticket.data.synth.write import (
    MAX_FRAMES,
    MIN_FRAMES,
    PRESETS,
    TRAIN_FRACTION,
    synthetic_split,
    write_synthetic,
)

__all__ = [
    "MAX_FRAMES",
    "MIN_DEPTH",
    "MIN_FRAMES",
    "NYU_INTRINSICS",
    "PRESETS",
    "TRAIN_FRACTION",
    "camera_intrinsics",
    "frame_rng",
    "render_frame",
    "render_frames",
    "synthetic_split",
    "write_synthetic",
]
