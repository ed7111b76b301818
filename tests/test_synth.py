"""The synthetic room generator: determinism, depth from geometry, and NYU's file layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from edgeticket import paths
from edgeticket.data.nyu import LABELED_FILE, open_source, open_with_split
from edgeticket.data.splits import SPLITS_FILE, read_splits_mat
from edgeticket.data.synth import (
    PRESETS,
    camera_intrinsics,
    frame_rng,
    render_frame,
    render_frames,
    render_set_frame,
    synthetic_split,
    view_rng,
    write_synthetic,
)
from edgeticket.data.synth.camera import world_rays
from edgeticket.data.synth.raycast import cast
from edgeticket.data.synth.scene import sample_scene, sample_view
from edgeticket.data.synth.streams import SPLIT_TAG
from edgeticket.errors import UserError

H, W = 120, 160


def small(seed: int, i: int, **kw):
    return render_frame(frame_rng(seed, i), H, W, **kw)


def test_same_seed_same_frame_other_seed_other_frame():
    rgb, depth = small(3, 5)
    rgb2, depth2 = small(3, 5)
    assert np.array_equal(rgb, rgb2) and np.array_equal(depth, depth2)
    rgb3, depth3 = small(4, 5)
    assert not np.array_equal(depth, depth3)
    assert not np.array_equal(rgb, rgb3)


def test_frame_depends_on_seed_and_index_alone():
    six = list(render_frames(6, seed=3, height=H, width=W))
    three = list(render_frames(3, seed=3, height=H, width=W))
    for (a_rgb, a_d), (b_rgb, b_d) in zip(three, six[:3], strict=True):
        assert np.array_equal(a_rgb, b_rgb) and np.array_equal(a_d, b_d)
    rgb, depth = small(3, 5)
    assert np.array_equal(six[5][0], rgb) and np.array_equal(six[5][1], depth)


def test_ranges_and_dtypes():
    ratios = []
    for rgb, depth in render_frames(6, seed=0, height=H, width=W):
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        assert depth.shape == (H, W) and depth.dtype == np.float32
        assert np.isfinite(depth).all()
        assert depth.min() > 0 and depth.max() <= 10.0
        assert rgb.std() > 5 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100
        assert depth.std() > 0.05
        ratios.append(depth.max() / depth.min())
    assert min(ratios) > 1.15
    assert np.mean(ratios) > 2.0


def test_full_size_frame_is_nyu_shaped():
    rgb, depth = render_frame(frame_rng(0, 0))
    assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
    assert 0.3 < depth.min() and depth.max() <= 10.0


def test_textures_change_colour_but_not_depth():
    rgb, depth = small(1, 2)
    flat_rgb, flat_depth = small(1, 2, textures=False)
    other_rgb, other_depth = small(1, 2, texture_seed=99)
    assert np.array_equal(depth, flat_depth) and np.array_equal(depth, other_depth)
    assert np.abs(rgb.astype(int) - flat_rgb.astype(int)).mean() > 2
    assert np.abs(rgb.astype(int) - other_rgb.astype(int)).mean() > 2
    _, next_depth = small(1, 3)
    assert np.abs(depth - next_depth).mean() > 0.1


def test_depth_is_distance_along_the_optical_axis():
    """Back-projecting depth with NYU's intrinsics puts floor pixels on the floor plane."""
    rng = frame_rng(2, 0)
    _, depth = render_frame(rng, H, W)
    geo_seed = int(frame_rng(2, 0).integers(0, 2**62, size=3)[0])
    scene = sample_scene(np.random.default_rng(geo_seed))
    _, sid, _ = cast(scene, world_rays(scene.rot, H, W), H, W)
    fx, fy, cx, cy = camera_intrinsics(H, W)
    v, u = np.mgrid[0:H, 0:W]
    cam = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1).astype(np.float64)
    world = cam @ scene.rot.T + np.array(scene.origin)
    floor = sid == 0
    ceiling = sid == 1
    assert floor.sum() > 100
    assert np.abs(world[floor][:, 1]).max() < 1e-3
    if ceiling.any():
        assert np.abs(world[ceiling][:, 1] - scene.room[1]).max() < 1e-3


def test_intrinsics_are_nyus_at_640x480():
    assert camera_intrinsics(480, 640) == (518.857901, 519.469611, 325.582449, 253.736166)
    fx, fy, cx, cy = camera_intrinsics(240, 320)
    assert fx == pytest.approx(518.857901 / 2) and cy == pytest.approx(126.618083)


def test_split_share_and_cover():
    train, test = synthetic_split(1449, 0)
    assert (len(train), len(test)) == (795, 654)
    for n in (8, 9, 10, 64):
        train, test = synthetic_split(n, 5)
        assert len(train) and len(test)
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert not np.array_equal(synthetic_split(64, 0)[0], synthetic_split(64, 1)[0])
    assert PRESETS["nyu"] == 1449 and PRESETS["small"] >= 8


def test_write_synthetic_reads_back_as_nyu(tmp_path):
    stats = write_synthetic(tmp_path, n=10, seed=7, progress=False)
    assert stats["n"] == 10 and stats["n_train"] + stats["n_test"] == 10
    assert stats["frames_per_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LABELED_FILE, SPLITS_FILE, paths.RUN_MARKER])

    path = tmp_path / LABELED_FILE
    head = path.read_bytes()[:512]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
    import scipy.io.matlab

    assert scipy.io.matlab.matfile_version(str(path)) == (2, 0)
    with h5py.File(path, "r") as f:
        assert f["images"].shape == (10, 3, 640, 480) and f["images"].dtype == np.uint8
        assert f["depths"].shape == (10, 640, 480) and f["depths"].dtype == np.float32
        assert f["images"].chunks == (1, 3, 640, 480)
        assert f["depths"].attrs["MATLAB_class"] == b"single"

    source = open_source(tmp_path)
    assert len(source) == 10 and stats["views"] == 3 and stats["rooms"] == 4  # 3 + 3 + 3 + 1 views
    assert source.scene_names() == [f"synthroom_{i // 3:05d}" for i in range(10)]
    for i in (0, 4, 9):
        rgb, depth = source.read(i)
        want_rgb, want_depth = render_set_frame(7, i, views=3)
        assert np.array_equal(rgb, want_rgb) and np.array_equal(depth, want_depth)
    source.close()

    source, split = open_with_split(tmp_path, val_fraction=0.1)
    every = np.sort(np.concatenate([split.train, split.val, split.test]))
    assert np.array_equal(every, np.arange(10))
    assert split.origin == str(tmp_path / SPLITS_FILE)
    train, test = read_splits_mat(tmp_path / SPLITS_FILE, 10)
    assert len(train) == stats["n_train"] and not set(train // 3) & set(test // 3)  # whole rooms
    assert split.val_carve == "scene" and not set(split.val // 3) & set(split.train // 3)
    source.close()


def test_one_view_per_room_gives_the_rooms_of_old(tmp_path):
    for i in (0, 5):
        a, b = render_set_frame(4, i, views=1, height=H, width=W), small(4, i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(synthetic_split(64, 3, views=1)[0],
                          np.sort(np.random.default_rng([3, SPLIT_TAG]).permutation(64)[:35]))
    write_synthetic(tmp_path, n=8, seed=4, progress=False, views=1)
    assert open_source(tmp_path).scene_names() == [f"synthroom_{i:05d}" for i in range(8)]


def _inside(prim, point, pad=0.1) -> bool:
    """Whether ``point`` lies in the solid (grown by ``pad``), from the solid's own definition."""
    dx, dy, dz = (point[k] - prim.centre[k] for k in range(3))
    if prim.kind == "sphere":
        return dx * dx + dy * dy + dz * dz < (prim.size[0] + pad) ** 2
    if prim.kind == "cylinder":
        return dx * dx + dz * dz < (prim.size[0] + pad) ** 2 and -pad < dy < prim.size[1] + pad
    c, s = np.cos(prim.yaw), np.sin(prim.yaw)  # local x, z are world (c, -s), (s, c)
    local = (dx * c - dz * s, dy, dx * s + dz * c)
    return all(abs(v) < h + pad for v, h in zip(local, prim.size, strict=True))


def test_the_views_of_a_room_are_one_room_from_other_poses():
    seed, views = 2, 4
    frames = [render_set_frame(seed, i, views, H, W) for i in range(views)]
    again = render_set_frame(seed, 2, views, H, W)
    assert np.array_equal(again[0], frames[2][0]) and np.array_equal(again[1], frames[2][1])  # deterministic
    geo_seed = int(frame_rng(seed, 0).integers(0, 2**62, size=3)[0])
    room = sample_scene(np.random.default_rng(geo_seed))
    fx, fy, cx, cy = camera_intrinsics(H, W)
    v, u = np.mgrid[0:H, 0:W]
    for k, (_, depth) in enumerate(frames):
        scene = room if k == 0 else sample_view(view_rng(seed, 0, k), room)
        assert scene.room == room.room and scene.prims == room.prims  # one room: the same geometry
        x, y, z = scene.origin
        assert 0 < x < room.room[0] and 0 < z < room.room[2] and 1.0 <= y <= 1.7
        assert not any(_inside(p, scene.origin) for p in room.prims)
        # the depth is this pose's: back-projected with it, floor pixels lie on the floor
        t, sid, _ = cast(scene, world_rays(scene.rot, H, W), H, W)
        assert np.allclose(np.clip(t, 1e-3, 10.0), depth, atol=1e-5)
        cam = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1).astype(np.float64)
        world = cam @ scene.rot.T + np.array(scene.origin)
        assert (sid == 0).sum() > 100 and np.abs(world[sid == 0][:, 1]).max() < 1e-3
    for a in range(views):
        for b in range(a + 1, views):
            assert np.abs(frames[a][1] - frames[b][1]).mean() > 0.05  # other poses, other depth maps


def test_split_keeps_each_room_whole():
    for n, views in ((240, 3), (64, 4), (10, 3), (9, 2)):
        train, test = synthetic_split(n, 1, views)
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
        assert len(train) and len(test) and not set(train // views) & set(test // views)
        assert abs(len(train) - n * 795 / 1449) <= views / 2 + 0.5
    assert not np.array_equal(synthetic_split(64, 0, 4)[0], synthetic_split(64, 1, 4)[0])


def test_one_worker_writes_the_same_file_as_several(tmp_path):
    write_synthetic(tmp_path / "one", n=8, seed=1, progress=False, workers=1)
    write_synthetic(tmp_path / "two", n=8, seed=1, progress=False, workers=2)
    one, two = (h5py.File(tmp_path / name / LABELED_FILE) for name in ("one", "two"))
    with one, two:
        assert np.array_equal(one["images"][:], two["images"][:])
        assert np.array_equal(one["depths"][:], two["depths"][:])


@pytest.mark.parametrize("n", [0, 7, -3])
def test_too_few_frames_is_a_user_error(tmp_path, n):
    with pytest.raises(UserError, match="--n"):
        write_synthetic(tmp_path, n=n, progress=False)
    assert not any(tmp_path.iterdir())
