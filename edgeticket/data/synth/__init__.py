"""Procedural indoor rooms in NYU Depth v2's official layout: the embedded default dataset.

A frame is a room box (floor, four walls, ceiling) seen with NYU's Kinect intrinsics from a
camera inside it, furnished with 3 to 8 solids standing on the floor (crates, tables, chairs,
cabinets, shelves, beds, sofas, floor lamps, cylinders, balls) plus a rug, pictures, windows
and doors on the walls. One ray per pixel is cast for all pixels at once with numpy. A set
shows each room from ``views`` camera poses (3 by default), consecutive frames that share the
room's scene name, as NYU's frames of one scene come from one walk through it; the split and
the validation carve keep a room's views together.

Depth is the z-distance along the optical axis, as a depth camera reports it, and comes from
geometry alone. Textures and lights come from a random stream of their own, so they only
colour the image: the same geometry re-rendered with other textures has bit-identical depth.

Frame i depends on (seed, views, i) alone, so frames rendered in parallel, or only some of them,
are the same frames; with one view per room, frame i is room i's first view, as before views. ``write_synthetic`` writes ``nyu_depth_v2_labeled.mat`` (HDF5 behind MATLAB's
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
from edgeticket.data.synth.shade import MIN_DEPTH, render_frame, render_frames, render_set_frame
from edgeticket.data.synth.streams import frame_rng, view_rng
from edgeticket.data.synth.write import (
    MAX_FRAMES,
    MAX_VIEWS,
    MIN_FRAMES,
    PRESETS,
    TRAIN_FRACTION,
    scene_names,
    synthetic_split,
    write_synthetic,
)

__all__ = [
    "MAX_FRAMES",
    "MAX_VIEWS",
    "MIN_DEPTH",
    "MIN_FRAMES",
    "NYU_INTRINSICS",
    "PRESETS",
    "TRAIN_FRACTION",
    "camera_intrinsics",
    "frame_rng",
    "render_frame",
    "render_frames",
    "render_set_frame",
    "scene_names",
    "synthetic_split",
    "view_rng",
    "write_synthetic",
]
