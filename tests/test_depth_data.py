"""Depth data layouts, readers, pseudo labels and DepthDataset (tiny files written in tmp_path + ../shared)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import png, shared_path

from visionlab.data.depth import (
    DepthDataset,
    collate,
    list_unlabeled,
    read_pseudo_label,
    write_pseudo_label,
    write_pseudo_manifest,
)
from visionlab.data.depth_layouts import parse_depth_spec, read_depth_png, read_disparity_npy
from visionlab.data.io import DataError


def _cfg(data: str, **kw) -> SimpleNamespace:
    base = dict(data=str(data), imgsz=(32, 48), crop=None, fraction=1.0, cache=True, augment=False, hflip=0.5,
                scale=(0.75, 1.25), colour_jitter=0.0, blur_noise=0.0, synthetic_train=3, synthetic_val=2, synthetic_rooms=0.0,
                synthetic_textures=None, seed=0,
                depth_scale=None, min_depth=None, max_depth=None, eval_crop=None)
    base.update(kw)
    return SimpleNamespace(**base)


def _rgb(h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _depth_png(path: Path, mm: np.ndarray) -> Path:
    return png(path, mm.astype(np.uint16))


def test_readers_units_and_errors(tmp_path: Path) -> None:
    mm = np.array([[0, 1000, 2500], [65535, 1, 10]], dtype=np.uint16)
    path = _depth_png(tmp_path / "d.png", mm)
    depth = read_depth_png(path, 1000)
    assert depth.dtype == np.float32 and depth[0, 1] == 1.0 and depth[0, 2] == 2.5 and depth[0, 0] == 0
    assert read_depth_png(path, 256)[1, 0] == pytest.approx(65535 / 256)
    with pytest.raises(DataError, match="16-bit"):
        read_depth_png(png(tmp_path / "rgb.png", _rgb()), 1000)
    with pytest.raises(DataError, match="depth_scale"):
        read_depth_png(path, 0)
    np.save(tmp_path / "x.npy", np.array([[1.5, np.nan], [-2.0, np.inf]], dtype=np.float32))
    assert read_disparity_npy(tmp_path / "x.npy").tolist() == [[1.5, 0.0], [0.0, 0.0]]
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match="bad.npy"):
        read_disparity_npy(tmp_path / "bad.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy"):
        read_disparity_npy(tmp_path / "junk.npy")


def _flat_folder(root: Path) -> Path:
    """a_rgb.png + a_depth.png (mm), b_rgb.jpg + b_depth.png."""
    for i, name in enumerate("ab"):
        png(root / f"{name}_rgb.png", _rgb(seed=i))
        mm = np.full((40, 50), 2000 + 1000 * i, np.uint16)
        mm[0, 0] = 0  # a hole
        mm[1, 1] = 20000  # 20 m: beyond a 10 m cap
        _depth_png(root / f"{name}_depth.png", mm)
    return root


def test_flat_folder_train_and_eval_samples(tmp_path: Path) -> None:
    root = _flat_folder(tmp_path / "flat")
    with pytest.raises(DataError, match="depth_scale"):
        DepthDataset(_cfg(root), "val", train=False)
    ds = DepthDataset(_cfg(root, depth_scale=1000, max_depth=10), "val", train=False)
    assert len(ds) == 2 and ds.skipped == [] and ds.name_of(1) == "b" and ds.path_of(0) == root / "a_rgb.png"
    s = ds[1]
    assert s["image"].shape == (3, 32, 48) and s["image"].dtype == torch.uint8
    assert s["target"].shape == (1, 40, 50) and s["valid"].shape == (1, 40, 50)  # native size for metrics
    assert s["space"] == 0 and s["source"] == "flat" and s["max_depth"] == 10.0
    assert s["target"][0, 5, 5] == 3.0 and s["valid"].sum() == 40 * 50 - 2  # hole and 20 m pixel invalid
    assert not s["valid"][0, 0, 0] and not s["valid"][0, 1, 1] and s["target"][0, 1, 1] == 0
    train = DepthDataset(_cfg(root, depth_scale=1000), "train", train=True)
    t = train[0]
    assert t["target"].shape == (1, 32, 48) and t["target"].dtype == torch.float32 and t["valid"].dtype == torch.bool
    assert set(t["target"][t["valid"]].unique().tolist()) <= {2.0, 20.0}  # nearest: no blended values


def test_augmentation_pads_invalid_and_never_blends(tmp_path: Path) -> None:
    root = tmp_path / "aug"
    png(root / "x_rgb.png", _rgb(64, 64))
    mm = np.where(np.arange(64)[None, :] < 32, 1000, 5000).repeat(64, 0).astype(np.uint16)
    mm[10:20, 10:20] = 0
    _depth_png(root / "x_depth.png", mm)
    cfg = _cfg(root, imgsz=(64, 64), depth_scale=1000, augment=True, scale=(0.5, 0.5), colour_jitter=0.3)
    ds = DepthDataset(cfg, "train", train=True)
    for _ in range(3):
        s = ds[0]
        target, valid = s["target"][0], s["valid"][0]
        assert target.shape == (64, 64)
        assert valid.float().mean() < 0.3  # a 32x32 rescale padded to 64x64: padding is invalid
        assert (target[~valid] == 0).all()
        assert set(target[valid].unique().tolist()) <= {1.0, 5.0}


def test_blur_noise_changes_the_image_only(tmp_path: Path) -> None:
    root = tmp_path / "blur"
    png(root / "x_rgb.png", _rgb(64, 64))
    mm = np.where(np.arange(64)[None, :] < 32, 1000, 5000).repeat(64, 0).astype(np.uint16)
    _depth_png(root / "x_depth.png", mm)
    geometry_off = dict(imgsz=(64, 64), depth_scale=1000, augment=True, scale=(1.0, 1.0), hflip=0.0)
    plain = DepthDataset(_cfg(root, **geometry_off), "train", train=True)[0]
    perturbed = [DepthDataset(_cfg(root, blur_noise=1.0, **geometry_off), "train", train=True)[0] for _ in range(4)]
    for s in perturbed:  # blur or noise on every sample (p=1): the picture changes, the depth never does
        assert not torch.equal(s["image"], plain["image"])
        assert torch.equal(s["target"], plain["target"]) and torch.equal(s["valid"], plain["valid"])

def test_subfolder_pairing_prefixes_ambiguity_and_unpaired(tmp_path: Path) -> None:
    root = tmp_path / "sub"
    for i in (0, 50):
        png(root / "rgb" / f"rgb_{i:05d}.jpg", _rgb(seed=i))
        _depth_png(root / "depth" / f"sync_depth_{i:05d}.png", np.full((40, 50), 1500 + i, np.uint16))
    png(root / "rgb" / "rgb_00099.jpg", _rgb())  # no depth: skipped, named
    with pytest.warns(UserWarning, match="1 depth file"):
        ds = DepthDataset(_cfg(f"nyu:{root}"), "val", train=False)  # nyu: -> /1000, eigen crop, 10 m
    assert [ds.name_of(i) for i in range(len(ds))] == ["00000", "00050"]
    assert ds[1]["target"][0, 20, 25] == pytest.approx(1.55)
    assert len(ds.skipped) == 1 and "rgb_00099.jpg" in ds.skipped[0]
    src = ds.sources[0]
    assert (src.depth_scale, src.max_depth, src.eval_crop) == (1000.0, 10.0, "eigen")
    # eigen crop scaled to 40x50: rows round(45/12)=4 .. round(471/12)=39, cols round(41*50/640)=3 .. 47
    valid = ds[0]["valid"][0]
    assert not valid[3].any() and valid[4, 3] and not valid[4, 2] and valid[38, 46] and not valid[39].any()
    # eval_crop=none overrides the nyu default
    with pytest.warns(UserWarning):
        assert DepthDataset(_cfg(f"nyu:{root}", eval_crop="none"), "val", train=False)[0]["valid"].all()
    png(root / "rgb" / "image_00050.png", _rgb())  # pairs as '00050' too: ambiguous, refused
    with pytest.raises(DataError, match="00050"):
        DepthDataset(_cfg(f"nyu:{root}"), "val", train=False)


def test_bad_files_are_named_and_skipped(tmp_path: Path) -> None:
    root = _flat_folder(tmp_path / "bad")
    (root / "c_rgb.png").write_bytes((root / "a_rgb.png").read_bytes()[:200])  # truncated
    _depth_png(root / "c_depth.png", np.full((40, 50), 1000, np.uint16))
    png(root / "d_rgb.png", _rgb(20, 50))  # too small
    _depth_png(root / "d_depth.png", np.full((20, 50), 1000, np.uint16))
    png(root / "e_rgb.png", _rgb(40, 50))  # size mismatch
    _depth_png(root / "e_depth.png", np.full((40, 60), 1000, np.uint16))
    for cache in (True, False):
        with pytest.warns(UserWarning, match="3 depth file"):
            ds = DepthDataset(_cfg(root, depth_scale=1000, cache=cache), "train", train=True)
        assert [ds.name_of(i) for i in range(len(ds))] == ["a", "b"]
        text = "\n".join(ds.skipped)
        assert len(ds.skipped) == 3 and "c_rgb.png" in text and "d_rgb.png" in text and "e_depth.png" in text
    only_bad = tmp_path / "only_bad"
    png(only_bad / "d_rgb.png", _rgb(20, 50))
    _depth_png(only_bad / "d_depth.png", np.full((20, 50), 1000, np.uint16))
    with pytest.raises(DataError, match="no usable"):
        DepthDataset(_cfg(only_bad, depth_scale=1000), "val", train=False)


def test_yaml_sources_relative_paths_and_collate(tmp_path: Path) -> None:
    _flat_folder(tmp_path / "data" / "metric")
    disp = tmp_path / "data" / "stereo"
    png(disp / "s_rgb.png", _rgb(60, 70))
    np.save(disp / "s_disp.npy", np.full((60, 70), 8.0, np.float32))
    (tmp_path / "mix.yaml").write_text(
        "name: mix\nsources:\n"
        "  - {name: m, path: data/metric, depth_scale: 1000, max_depth: 10, eval_crop: garg}\n"
        "  - {name: st, path: data/stereo}\n")
    ds = DepthDataset(_cfg(tmp_path / "mix.yaml"), "val", train=False)
    assert [ds[i]["source"] for i in range(3)] == ["m", "m", "st"]
    assert ds[2]["space"] == 1 and ds[2]["target"][0, 0, 0] == 8.0
    batch = collate([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 32, 48) and isinstance(batch["target"], list)
    assert batch["space"].tolist() == [0, 0, 1] and batch["source"] == ["m", "m", "st"]
    assert torch.isnan(batch["max_depth"][2]) and batch["max_depth"][0] == 10
    garg = ds[0]["valid"][0]  # rows int(0.408*40)=16..int(0.992*40)=39, cols 1..48
    assert not garg[15].any() and garg[16, 5] and not garg[16, 0]
    (tmp_path / "bad.yaml").write_text("sources:\n  - {path: data/metric, units: mm}\n")
    with pytest.raises(DataError, match="units"):
        parse_depth_spec(str(tmp_path / "bad.yaml"))


def test_yaml_mixes_synthetic_scenes_with_a_folder(tmp_path: Path) -> None:
    """`path: synthetic` in a dataset YAML: the student's pseudo labels + synthetic scenes, one dataset."""
    _flat_folder(tmp_path / "metric")
    (tmp_path / "mix.yaml").write_text("sources:\n  - {path: synthetic}\n  - {name: real, path: metric, depth_scale: 1000}\n")
    ds = DepthDataset(_cfg(tmp_path / "mix.yaml", synthetic_train=4, synthetic_rooms=0.5), "train", train=True)
    names = [ds.name_of(i) for i in range(len(ds))]
    assert len(ds) == 4 + 2 and [ds[i]["source"] for i in (0, 5)] == ["synthetic", "real"]
    assert sum(n.startswith("room_") for n in names) == 2 and sum(n.startswith("scene_") for n in names) == 2
    (tmp_path / "twice.yaml").write_text("sources:\n  - {path: synthetic}\n  - {path: synthetic}\n")
    with pytest.raises(DataError, match="used twice"):
        parse_depth_spec(str(tmp_path / "twice.yaml"))


def test_nyu_mat_transposed_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    n, h, w = 2, 36, 40
    rgb = np.stack([_rgb(h, w, seed=i) for i in range(n)])  # N x H x W x 3
    depth = np.random.default_rng(0).uniform(0.5, 12, (n, h, w)).astype(np.float32)
    with h5py.File(tmp_path / "nyu.mat", "w") as f:  # MATLAB v7.3 as h5py sees it: [N,3,W,H], [N,W,H]
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["depths"] = depth.transpose(0, 2, 1)
    ds = DepthDataset(_cfg(tmp_path / "nyu.mat", imgsz=(h, w), eval_crop="none"), "val", train=False)
    s = ds[1]
    assert len(ds) == 2 and s["space"] == 0 and str(ds.path_of(1)).endswith("nyu.mat#1")
    assert torch.equal(s["image"], torch.from_numpy(rgb[1]).permute(2, 0, 1))
    assert torch.allclose(s["target"][0][s["valid"][0]], torch.from_numpy(depth[1])[s["valid"][0]])
    assert not s["valid"][0][torch.from_numpy(depth[1] > 10)].any()  # NYU default 10 m cap


def test_pseudo_labels_roundtrip_and_splits(tmp_path: Path) -> None:
    images = tmp_path / "unlabeled"
    for i in range(21):
        png(images / f"{i:02d}.png", _rgb(32, 32, seed=i))
    (images / ".hidden.png").write_bytes(b"x")
    files = list_unlabeled(images)
    assert len(files) == 21 and files[0].name == "00.png"
    out = tmp_path / "pseudo"
    ramp = np.linspace(0, 3.0, 32 * 32).reshape(32, 32)
    items = [write_pseudo_label(out, p.stem, ramp * (1 + i), image=p) for i, p in enumerate(files)]
    write_pseudo_manifest(out, items, teacher="t")
    assert items[2]["scale"] == pytest.approx(9.0 / 65535)
    back = read_pseudo_label(out, "02")
    assert np.abs(back - ramp * 3).max() <= items[2]["scale"] / 2 + 1e-6 and back.max() == pytest.approx(9.0)
    train = DepthDataset(_cfg(out, imgsz=(32, 32)), "train", train=True)
    val = DepthDataset(_cfg(out, imgsz=(32, 32)), "val", train=False)
    assert [val.name_of(i) for i in range(len(val))] == ["00", "20"] and len(train) == 19
    s = val[1]
    assert s["space"] == 1 and s["valid"].all() and s["target"].max() == pytest.approx(3.0 * 21, rel=1e-4)
    with pytest.raises(DataError):
        list_unlabeled(tmp_path / "nope")


def test_synthetic_splits_and_sky(tmp_path: Path) -> None:
    train = DepthDataset(_cfg("synthetic"), "train", train=True)
    val = DepthDataset(_cfg("synthetic"), "val", train=False)
    assert len(train) == 3 and len(val) == 2
    assert not {train.name_of(i) for i in range(3)} & {val.name_of(i) for i in range(2)}
    assert train[0]["valid"].all()  # sky (1000 m) is a valid "far" label for training
    s = val[0]
    assert s["target"].shape == (1, 32, 48) and (s["target"][s["valid"]] < 1000).all()
    assert not s["valid"].all()  # the sky is not scored
    rooms = DepthDataset(_cfg("synthetic", synthetic_rooms=1.0), "val", train=False)
    assert all(rooms.name_of(i).startswith("room_") for i in range(2)) and rooms[0]["valid"].all()  # no sky
    sub = DepthDataset(_cfg("synthetic", synthetic_train=10, fraction=0.3), "train", train=True)
    again = DepthDataset(_cfg("synthetic", synthetic_train=10, fraction=0.3), "train", train=True)
    assert len(sub) == 3 and [sub.name_of(i) for i in range(3)] == [again.name_of(i) for i in range(3)]


# every real file in ../shared/data/depth, with the units its SOURCE.md / README.md states
SHARED = [  # (folder, data prefix, depth_scale, count, space, plausible max depth in m)
    ("middlebury_2001_2003", "", None, 4, 1, None),
    ("nyu_raw_slambook2", "", 1000, 5, 0, 10.0),
    ("tum_rgbd", "tum:", None, 3, 0, 12.0),  # slambook2_ch7_2 reaches 10.5 m
    ("metric3d_nyu_kitti/nyu_demo", "nyu:", None, 3, 0, 10.0),
    ("metric3d_nyu_kitti/kitti_demo", "kitti:", None, 3, 0, 80.0),
    ("nyu_extra/unidepth_nyu", "nyu:", None, 1, 0, 10.0),
    ("nyu_extra/mmseg_nyu_160x120", "nyu:", None, 1, 0, 10.0),
]


@pytest.mark.parametrize("folder,prefix,scale,count,space,cap", SHARED, ids=[s[0] for s in SHARED])
def test_every_shared_depth_file_loads(folder: str, prefix: str, scale, count: int, space: int, cap) -> None:
    root = shared_path("data", "depth", *folder.split("/"))
    ds = DepthDataset(_cfg(f"{prefix}{root}", depth_scale=scale), "val", train=False)
    assert len(ds) == count and ds.skipped == []
    for i in range(len(ds)):
        s = ds[i]
        valid, target = s["valid"][0], s["target"][0]
        assert s["space"] == space and s["image"].shape == (3, 32, 48)
        assert 0.05 < valid.float().mean() <= 1.0, ds.path_of(i)
        if cap is not None:  # metres in a plausible range: units are right
            assert 0.3 < float(target[valid].min()) and float(target[valid].max()) <= cap, ds.path_of(i)
            assert float(target[valid].median()) > 1.0
        else:
            assert float(target[valid].min()) > 0  # Middlebury: positive disparities in pixels


def test_shared_sources_yaml(tmp_path: Path) -> None:
    root = shared_path("data", "depth")
    (tmp_path / "real.yaml").write_text(
        "name: real_depth\nsources:\n"
        f"  - {{name: nyu, path: {root}/metric3d_nyu_kitti/nyu_demo, depth_scale: 1000, max_depth: 10,"
        " eval_crop: eigen}\n"
        f"  - {{name: kitti, path: {root}/metric3d_nyu_kitti/kitti_demo, depth_scale: 256, max_depth: 80,"
        " eval_crop: garg}\n"
        f"  - {{name: middlebury, path: {root}/middlebury_2001_2003}}\n")
    ds = DepthDataset(_cfg(tmp_path / "real.yaml"), "test", train=False)
    assert len(ds) == 10 and sorted({ds[i]["source"] for i in range(10)}) == ["kitti", "middlebury", "nyu"]
    kitti = next(ds[i] for i in range(10) if ds[i]["source"] == "kitti")
    assert kitti["target"].shape == (1, 375, 1242) and not kitti["valid"][0, :150].any()  # Garg crop


def test_unknown_kind_prefix_is_named(tmp_path) -> None:
    from visionlab.data.depth_layouts import parse_depth_spec
    from visionlab.data.io import DataError

    with pytest.raises(DataError, match="'camvid:' is not a depth dataset kind"):
        parse_depth_spec(f"camvid:{tmp_path}")  # the folder exists: "does not exist" would be wrong
