"""NYU readers, the split rules, the training cache, augmentation, and bad data."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from helpers import SIZE, shared_nyu
from PIL import Image

from edgeticket import paths
from edgeticket.data.augment import AugmentConfig, AugmentParams, augment, sample_params, to_input
from edgeticket.data.config import DataConfig
from edgeticket.data.dataset import PreparedData
from edgeticket.data.geometry import resize_depth, resize_rgb
from edgeticket.data.nyu import (
    LABELED_FILE,
    LabeledMat,
    Nyu2Folder,
    open_source,
    open_with_split,
    write_labeled_mat,
)
from edgeticket.data.prepare import CACHE_DIRNAME, prepare, resolve_data
from edgeticket.data.splits import (
    official_split,
    official_split_path,
    read_splits_mat,
    write_splits_mat,
)
from edgeticket.errors import UserError
from edgeticket.fsio import sha256_file
from edgeticket.hparams import InputSize, parse_value


def random_frames(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), rng.uniform(0.5, 9.5, (480, 640)).astype(np.float32))
            for _ in range(n)]


def write_mat(path, images=None, depths=None, n=3, frames=None):
    """A labeled .mat by the real writer, of ``frames`` or n random ones. ``images`` or ``depths``
    then replace that dataset, as h5py shows it (False drops it): the malformed files to refuse."""
    frames = random_frames(n) if frames is None else frames
    write_labeled_mat(path, frames, len(frames))
    broken = {name: data for name, data in (("images", images), ("depths", depths)) if data is not None}
    if broken:
        with h5py.File(path, "r+") as f:
            for name, data in broken.items():
                del f[name]
                if data is not False:
                    f.create_dataset(name, data=data)
    return path


# -- readers ------------------------------------------------------------------------------------

def test_labeled_reader_orientation_units_and_header(tmp_path):
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:10, :, 0] = 255  # a red band along the top rows
    depth = np.tile(np.linspace(1, 9, 640, dtype=np.float32), (480, 1))  # depth grows to the right
    write_mat(tmp_path / LABELED_FILE, frames=[(rgb, depth)])
    head = (tmp_path / LABELED_FILE).read_bytes()[:512]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
    with h5py.File(tmp_path / LABELED_FILE) as f:  # MATLAB's column-major layout, not the reader's view
        images, depths = f["images"], f["depths"]
        assert images.shape == (1, 3, 640, 480) and images.dtype == np.uint8 and images.chunks == (1, 3, 640, 480)
        assert depths.shape == (1, 640, 480) and depths.dtype == np.float32 and depths.chunks == (1, 640, 480)
        assert images[0, 0, 320, 0] == 255 and images[0, 0, 320, 200] == 0
        assert depths[0, -1, 100] == pytest.approx(9)
        assert images.attrs["MATLAB_class"] == b"uint8" and depths.attrs["MATLAB_class"] == b"single"
    src = open_source(tmp_path)
    assert isinstance(src, LabeledMat) and len(src) == 1
    r, d = src.read(0)
    assert r.shape == (480, 640, 3) and r.dtype == np.uint8 and d.shape == (480, 640) and d.dtype == np.float32
    assert r[0, 320, 0] == 255 and r[200, 320, 0] == 0
    assert d[100, 0] == pytest.approx(1) and d[100, -1] == pytest.approx(9)


def test_labeled_reader_reads_lazily(tmp_path, monkeypatch):
    write_mat(tmp_path / LABELED_FILE, n=4)
    src = LabeledMat(tmp_path / LABELED_FILE)
    assert isinstance(src.images, h5py.Dataset)  # a handle, not an array in memory
    r, _ = src.read(3)
    assert r.shape == (480, 640, 3)


def test_labeled_writer_refuses_a_wrong_stream_and_leaves_no_file(tmp_path):
    path = tmp_path / LABELED_FILE
    frames = random_frames(2)
    with pytest.raises(ValueError, match="ran out after 2 of 3"):
        write_labeled_mat(path, frames, 3)
    with pytest.raises(ValueError, match="more frames than the n=1"):
        write_labeled_mat(path, frames, 1)
    with pytest.raises(ValueError, match="frame 0 is uint8 \\(640, 480, 3\\)"):
        write_labeled_mat(path, [(frames[0][0].transpose(1, 0, 2), frames[0][1])], 1)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def add_scenes_as_matlab_does(path, names):
    """``scenes`` built by hand as MATLAB v7.3 saves a cell array of strings (the official file's
    layout): an N x 1 cell, so (1, N) object references in h5py, to char arrays in #refs#
    (MATLAB names them a, b, ...), each a (length, 1) column of uint16 character codes."""
    with h5py.File(path, "r+") as f:
        refs = f.create_group("#refs#")
        targets = []
        for k, name in enumerate(names):
            key = chr(ord("b") + k)
            if name:
                target = refs.create_dataset(key, data=np.array([[ord(c)] for c in name], np.uint16))
                target.attrs["MATLAB_int_decode"] = np.int32(2)
            else:  # an empty char array holds its dimensions and a flag
                target = refs.create_dataset(key, data=np.array([0, 0], np.uint64))
                target.attrs["MATLAB_empty"] = np.uint8(1)
            target.attrs["MATLAB_class"] = np.bytes_(b"char")
            targets.append(target.ref)
        cell = f.create_dataset("scenes", (1, len(targets)), dtype=h5py.ref_dtype)
        cell[0, :] = targets
        cell.attrs["MATLAB_class"] = np.bytes_(b"cell")
    return path


def test_scene_names_as_matlab_writes_them(tmp_path):
    names = ["kitchen_0028b", "bedroom_0004", "", "living_room_0010"]
    path = add_scenes_as_matlab_does(write_mat(tmp_path / LABELED_FILE, n=4), names)
    src = LabeledMat(path)
    assert src.scene_names() == names
    assert LabeledMat(write_mat(tmp_path / "plain.mat", n=2)).scene_names() is None


def test_scene_names_round_trip_in_matlabs_layout(tmp_path):
    names = ["kitchen_0028b", "", "café_0001", "bathroom_0005"]
    path = tmp_path / LABELED_FILE
    write_labeled_mat(path, random_frames(4), 4, scenes=names)
    assert LabeledMat(path).scene_names() == names
    with h5py.File(path) as f:
        cell = f["scenes"]
        assert cell.shape == (1, 4) and h5py.check_dtype(ref=cell.dtype) is h5py.Reference
        assert cell.attrs["MATLAB_class"] == b"cell"
        chars = f[cell[0, 0]]
        assert chars.name.startswith("/#refs#/") and chars.dtype == np.uint16 and chars.shape == (13, 1)
        assert chars.attrs["MATLAB_class"] == b"char" and chars.attrs["MATLAB_int_decode"] == 2
        assert "".join(map(chr, chars[:, 0])) == "kitchen_0028b"
    with pytest.raises(ValueError, match="3 scene names for n=4"):
        write_labeled_mat(tmp_path / "other.mat", random_frames(4), 4, scenes=names[:3])


@pytest.mark.parametrize("case", ["too_few", "not_references", "not_char"])
def test_bad_scenes_get_one_sentence_naming_the_file(tmp_path, case):
    path = write_mat(tmp_path / LABELED_FILE, n=3)
    if case == "too_few":
        add_scenes_as_matlab_does(path, ["a_0001", "b_0002"])
    else:
        with h5py.File(path, "r+") as f:
            if case == "not_references":
                f["scenes"] = np.zeros((1, 3), np.uint16)
            else:
                f["scenes"] = np.array([[f["depths"].ref] * 3], dtype=h5py.ref_dtype)
    with pytest.raises(UserError) as e:
        LabeledMat(path).scene_names()
    assert str(path) in str(e.value) and "'scenes'" in str(e.value) and "\n" not in str(e.value)


def test_real_nyu2_sample_frames_orientation_and_units():
    folder = shared_nyu() / "test_first10"
    src = open_source(folder)
    assert isinstance(src, Nyu2Folder) and len(src) == 10
    assert [src.frame_id(i) for i in range(3)] == [0, 1, 8]
    rgb, depth = src.read(0)
    assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
    assert depth.dtype == np.float32 and 0.5 < depth[depth > 0].min() and depth.max() <= 10.0
    raw = np.asarray(Image.open(folder / "00000_depth.png"))
    assert raw.dtype == np.uint16 and depth[100, 200] == pytest.approx(raw[100, 200] / 1000.0)
    # the white frame border of NYU's colour images sits at the edges, not in the middle
    assert rgb[:, :5].mean() > 200 and rgb[200:280, 280:360].mean() < 200
    _, split = open_with_split(folder)
    assert len(split.test) == 10 and len(split.train) == 0


def test_nyu2_csv_listing(tmp_path):
    folder = tmp_path / "data" / "nyu2_test"
    folder.mkdir(parents=True)
    for i in (3, 7):
        Image.fromarray(np.full((480, 640, 3), i, np.uint8)).save(folder / f"{i:05d}_colors.png")
        Image.fromarray(np.full((480, 640), 1000 * i, np.uint16)).save(folder / f"{i:05d}_depth.png")
    (folder / "nyu2_test.csv").write_text("".join(f"data/nyu2_test/{i:05d}_colors.png,data/nyu2_test/{i:05d}_depth.png\n" for i in (7, 3)))
    src = open_source(folder)
    assert [src.frame_id(i) for i in range(2)] == [7, 3]
    assert src.read(1)[1][0, 0] == pytest.approx(3.0)


# -- splits --------------------------------------------------------------------------------------

def test_shipped_official_split_equals_the_real_file():
    real = shared_nyu() / "splits.mat"
    assert sha256_file(official_split_path()) == sha256_file(real)
    train, test = official_split()
    assert len(train) == 795 and len(test) == 654
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1449))
    assert test[:3].tolist() == [0, 1, 8]  # 1-based 1, 2, 9


def test_split_precedence(tmp_path):
    # 1. the folder's own splits.mat
    write_mat(tmp_path / LABELED_FILE, n=10)
    write_splits_mat(tmp_path / "splits.mat", np.array([0, 1, 2, 3, 4, 5]), np.array([6, 7, 8, 9]))
    _, s = open_with_split(tmp_path, val_fraction=0.2)
    assert sorted(np.concatenate([s.train, s.val]).tolist()) == [0, 1, 2, 3, 4, 5] and len(s.val) == 1
    assert s.test.tolist() == [6, 7, 8, 9] and str(tmp_path / "splits.mat") in s.origin
    d = scipy.io.loadmat(tmp_path / "splits.mat")
    assert d["trainNdxs"].shape == (6, 1) and d["trainNdxs"].min() == 1  # 1-based column vectors


def test_official_split_for_1449_frames_without_a_split_file(tmp_path):
    write_labeled_mat(tmp_path / LABELED_FILE, [], 1449, unwritten_ok=True)  # 1,449 frames in no space
    _, s = open_with_split(tmp_path)
    assert "official" in s.origin and len(s.test) == 654 and len(s.train) + len(s.val) == 795


def test_no_split_is_an_error_that_says_how(tmp_path):
    write_mat(tmp_path / LABELED_FILE, n=5)
    with pytest.raises(UserError, match="splits.mat with trainNdxs and testNdxs"):
        open_with_split(tmp_path)


def test_val_fraction_is_seeded(tmp_path):
    write_mat(tmp_path / LABELED_FILE, n=20)
    write_splits_mat(tmp_path / "splits.mat", np.arange(12), np.arange(12, 20))
    a = open_with_split(tmp_path, 0.25, seed=0)[1]
    b = open_with_split(tmp_path, 0.25, seed=0)[1]
    c = open_with_split(tmp_path, 0.25, seed=1)[1]
    assert a.val.tolist() == b.val.tolist() and len(a.val) == 3
    assert a.val.tolist() != c.val.tolist()


def _room(name: str) -> str:
    """kitchen_0001b -> kitchen_0001: NYU's visits of one room, written out for the test."""
    return name[:-1] if name[-1].isalpha() else name


def _scene_mat(folder, names, train, test):
    write_labeled_mat(folder / LABELED_FILE, [], len(names), scenes=names, unwritten_ok=True)  # no frame data
    write_splits_mat(folder / "splits.mat", np.asarray(train), np.asarray(test))
    return folder


SCENES = ["kitchen_0001a", "kitchen_0001b", "bedroom_0002", "office_0003", "bathroom_0004a", "bathroom_0004b",
          "study_0005", "dining_room_0006", "living_room_0007a", "living_room_0007b"]  # 7 rooms, 3 visited twice


def test_validation_is_carved_by_whole_scenes_where_the_mat_names_them(tmp_path):
    names = [SCENES[i // 3] for i in range(30)]  # 3 frames a scene
    folder = _scene_mat(tmp_path, names, np.arange(24), np.arange(24, 30))
    vals = set()
    for seed in range(6):
        _, s = open_with_split(folder, 0.25, seed=seed)
        assert s.val_carve == "scene" and s.test.tolist() == list(range(24, 30))  # test untouched
        assert np.array_equal(np.sort(np.concatenate([s.train, s.val])), np.arange(24))
        train_rooms, val_rooms = {_room(names[i]) for i in s.train}, {_room(names[i]) for i in s.val}
        assert not train_rooms & val_rooms, seed  # no room on both sides, visits included
        assert abs(len(s.val) - 6) <= 3  # the fraction, to within half a scene of frames
        vals.add(tuple(s.val))
        assert open_with_split(folder, 0.25, seed=seed)[1].val.tolist() == s.val.tolist()  # seeded
    assert len(vals) > 2
    by_frame = open_with_split(folder, 0.25, seed=0, carve="frame")[1]
    assert by_frame.val_carve == "frame"
    plain = tmp_path / "plain"
    plain.mkdir()
    write_labeled_mat(plain / LABELED_FILE, [], 30, unwritten_ok=True)
    write_splits_mat(plain / "splits.mat", np.arange(24), np.arange(24, 30))
    without = open_with_split(plain, 0.25, seed=0)[1]  # no scene names: by frame, as before
    assert without.val_carve == "frame" and without.val.tolist() == by_frame.val.tolist()
    with pytest.raises(UserError, match=r"--val-carve scene: .*plain names no scenes"):
        open_with_split(plain, 0.25, carve="scene")


def test_unnamed_frames_carve_alone_and_one_scene_falls_back_to_frames(tmp_path):
    names = ["", "", "a_0001", "a_0001", "", "b_0002", "b_0002", "b_0002", "", ""]
    _, s = open_with_split(_scene_mat(tmp_path, names, np.arange(8), [8, 9]), 0.3, seed=1)
    assert s.val_carve == "scene"
    for scene in ("a_0001", "b_0002"):
        members = {i for i in range(8) if names[i] == scene}
        assert members <= set(s.val.tolist()) or not members & set(s.val.tolist())
    one = tmp_path / "one"
    one.mkdir()
    _, s = open_with_split(_scene_mat(one, ["a_0001"] * 8 + ["b_0002"] * 2, np.arange(8), [8, 9]), 0.25)
    assert s.val_carve == "frame" and len(s.val) == 2  # train is one scene: auto carves by frame
    with pytest.raises(UserError, match="all of one scene"):
        open_with_split(one, 0.25, carve="scene")


def test_the_cache_and_the_model_say_which_carve_was_used(cache, synth_dir, tmp_path):
    data = PreparedData(cache)
    assert data.meta["val_carve"] == "scene"  # the synthetic rooms name their scenes
    room = {}  # frame -> room, from the scene names the generator wrote
    names = open_source(synth_dir).scene_names()
    for name in ("train", "val", "test"):
        with h5py.File(cache / paths.cache_split(name)) as f:
            frames = f["frame"][:].tolist()
        room[name] = {names[f] for f in frames}
        assert data.meta["scenes"][name] == len(room[name])
    assert room["val"] and not room["val"] & room["train"] and not room["test"] & (room["train"] | room["val"])
    frame = prepare(synth_dir, tmp_path / "c", DataConfig(input_size=SIZE, val_fraction=0.15, val_carve="frame"),
                    progress=False)
    meta = PreparedData(frame).meta
    assert meta["val_carve"] == "frame" and "scenes" not in meta and meta["key"] != data.meta["key"]


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["truncated", "not_hdf5", "no_images", "no_depths", "mismatched", "split_past_end",
                                  "nan_depth", "negative_depth", "empty_folder", "swapped_dims", "wrong_dtype"])
def test_bad_data_gets_one_sentence_naming_the_file(tmp_path, case):
    mat = tmp_path / LABELED_FILE
    if case == "truncated":
        write_mat(mat, n=2)
        mat.write_bytes(mat.read_bytes()[: 4000])
    elif case == "not_hdf5":
        mat.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    elif case == "no_images":
        write_mat(mat, images=False)
    elif case == "no_depths":
        write_mat(mat, depths=False)
    elif case == "mismatched":
        write_mat(mat, depths=np.ones((2, 640, 480), np.float32), n=3)
    elif case == "split_past_end":
        write_mat(mat, n=3)
        write_splits_mat(tmp_path / "splits.mat", np.array([0, 1]), np.array([5]))
    elif case == "nan_depth":
        d = np.ones((2, 640, 480), np.float32)
        d[1, 5, 5] = np.nan
        write_mat(mat, depths=d, n=2)
    elif case == "negative_depth":
        d = np.ones((2, 640, 480), np.float32)
        d[0, 5, 5] = -1
        write_mat(mat, depths=d, n=2)
    elif case == "swapped_dims":
        write_mat(mat, images=np.zeros((2, 3, 480, 640), np.uint8), depths=np.ones((2, 480, 640), np.float32))
    elif case == "wrong_dtype":
        write_mat(mat, images=np.zeros((2, 3, 640, 480), np.float32), n=2)
    if case not in ("empty_folder", "split_past_end"):
        write_splits_mat(tmp_path / "splits.mat", np.array([0]), np.array([1]))
    with pytest.raises(UserError) as e:
        src, split = open_with_split(tmp_path)
        for i in range(len(src)):
            src.read(i)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".")
    assert str(tmp_path) in msg


def test_input_size_parsing():
    assert InputSize.parse("228x304") == (228, 304) and str(InputSize(228, 304)) == "228x304"
    assert InputSize.parse([48, 64]) == InputSize(48, 64)
    for bad in ("228", "228x", "x304", "0x10", "228*304", "10x10", "99999x64"):
        with pytest.raises(ValueError):
            InputSize.parse(bad)
    field = {f.name: f for f in dataclasses.fields(DataConfig)}["input_size"]
    for bad in ("228", "0x10"):  # at the edge, the message names the option, or the file's key
        with pytest.raises(UserError, match="--input-size '"):
            parse_value(DataConfig, field, bad)
        with pytest.raises(UserError, match=r"x.toml \[data\]: input_size = '"):
            DataConfig.from_dict({"input_size": bad}, "x.toml [data]")


# -- prepare and the cache -------------------------------------------------------------------------

def test_prepared_cache_shapes_and_full_resolution_ground_truth(cache, synth_dir):
    data = PreparedData(cache)
    counts = data.meta["counts"]
    assert sum(counts.values()) == 24 and counts["val"] >= 1
    tr = data.load("train")
    assert tr.rgb.shape == (counts["train"], 3, *SIZE) and tr.rgb.dtype == torch.uint8
    assert tr.depth.shape == (counts["train"], 1, *SIZE)
    rgb, gt = next(data.iter_full("test", 4))
    assert gt.shape == (4, 1, 480, 640)
    src, split = open_with_split(synth_dir, 0.15)
    raw_rgb, raw_depth = src.read(int(split.test[0]))
    assert np.array_equal(gt[0, 0].numpy(), raw_depth)
    assert np.array_equal(rgb[0].permute(1, 2, 0).numpy(), resize_rgb(raw_rgb, SIZE))


def test_data_folder_is_prepared_once_into_its_own_cache(synth_dir):
    a = resolve_data(synth_dir, DataConfig(input_size=SIZE, val_fraction=0.15), progress=False)
    mtime = (a / "cache.json").stat().st_mtime_ns
    b = resolve_data(synth_dir, DataConfig(input_size=SIZE, val_fraction=0.15), progress=False)
    assert a == b and (b / "cache.json").stat().st_mtime_ns == mtime
    assert a.parent.name == CACHE_DIRNAME and a.name.startswith("48x64-")
    assert resolve_data(synth_dir, DataConfig(input_size=(32, 48), val_fraction=0.15), progress=False) != a


def test_cache_of_another_size_is_refused(cache):
    with pytest.raises(UserError, match="this cache is 48x64"):
        resolve_data(cache, DataConfig(input_size=(96, 128)))


def test_prepare_refuses_an_out_dir_inside_the_data(synth_dir):
    with pytest.raises(UserError, match="inside the data folder"):
        prepare(synth_dir, synth_dir / "cache", DataConfig(input_size=SIZE))


def test_resize_depth_never_blends_missing_pixels():
    d = np.full((480, 640), 4.0, np.float32)
    d[:, :320] = 0
    out = resize_depth(d, (48, 64))
    assert set(np.unique(out[:, :30]).round(4)) <= {0.0} and np.allclose(out[:, 34:], 4.0)


# -- augmentation -----------------------------------------------------------------------------------

def test_identity_augmentation_equals_the_evaluation_input(prepared):
    tr = prepared.load("train")
    rgb, depth = tr.rgb[:3], tr.depth[:3]
    x, d = augment(rgb, depth, AugmentParams.identity(3))
    assert torch.equal(x, to_input(rgb)) and torch.equal(d, depth)
    none = AugmentConfig(scale=(1.0, 1.0), rotate_deg=0.0, jitter=0.0, flip=False)
    x2, d2 = augment(rgb, depth, sample_params(3, none, torch.Generator().manual_seed(3)))
    assert torch.equal(x2, to_input(rgb)) and torch.equal(d2, depth)


def test_scale_divides_depth_and_flip_mirrors(prepared):
    tr = prepared.load("train")
    rgb, depth = tr.rgb[:1], tr.depth[:1]
    p = AugmentParams.identity(1)
    p.flip = torch.tensor([True])
    x, d = augment(rgb, depth, p)
    assert torch.equal(d, depth.flip(-1))
    assert torch.allclose(x, to_input(rgb).flip(-1), atol=1e-5)
    p = AugmentParams.identity(1)
    p.scale = torch.tensor([1.5])
    _, d = augment(rgb, depth, p)
    centre = depth[0, 0, SIZE[0] // 2, SIZE[1] // 2]
    assert float(d[0, 0, SIZE[0] // 2, SIZE[1] // 2]) == pytest.approx(float(centre) / 1.5, rel=0.05)


def test_augmentation_is_reproducible_for_a_seed(prepared):
    tr = prepared.load("train")
    cfg = AugmentConfig()
    a = augment(tr.rgb[:4], tr.depth[:4], sample_params(4, cfg, torch.Generator().manual_seed(5)))
    b = augment(tr.rgb[:4], tr.depth[:4], sample_params(4, cfg, torch.Generator().manual_seed(5)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], to_input(tr.rgb[:4]))


def test_read_splits_mat_rejects_garbage(tmp_path):
    (tmp_path / "splits.mat").write_bytes(b"nonsense")
    with pytest.raises(UserError, match="splits.mat"):
        read_splits_mat(tmp_path / "splits.mat")
