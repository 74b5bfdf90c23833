"""visionlab.data.segmentation_layouts: data specs, pairing, label mappings; real CamVid/Cityscapes when available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visionlab.data.categories import IGNORE_INDEX
from visionlab.data.io import DataError, read_label
from visionlab.data.segmentation_layouts import (
    CAMVID_LUT,
    CITYSCAPES_LUT,
    DataSpec,
    list_pairs,
    map_label,
    parse_data_spec,
)

from conftest import png as _png, shared_path

H, W = 40, 48


def make_folder(root: Path, splits: dict[str, int] | None = None, max_id: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (splits or {"train": 3, "val": 2}).items():
        for i in range(n):
            _png(root / "images" / split / f"f{i:03d}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            _png(root / "masks" / split / f"f{i:03d}.png", rng.integers(0, max_id, (H, W), dtype=np.uint8))
    return root


def _msg(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- mappings


@pytest.mark.parametrize(
    "raw,cat",
    [(0, 0), (1, 0), (6, 0), (7, 1), (8, 1), (9, 1), (10, 1), (11, 2), (13, 2), (16, 2), (17, 3),
     (20, 3), (21, 4), (22, 4), (23, 5), (24, 6), (25, 6), (26, 7), (31, 7), (33, 7), (34, 255), (255, 255)],
)
def test_cityscapes_lut(raw: int, cat: int) -> None:
    assert CITYSCAPES_LUT[raw] == cat


def test_camvid_lut() -> None:
    expected = [5, 2, 3, 1, 1, 4, 3, 2, 7, 6, 6, IGNORE_INDEX]
    assert CAMVID_LUT[:12].tolist() == expected
    assert (CAMVID_LUT[12:] == IGNORE_INDEX).all()
    with pytest.raises(ValueError):
        CAMVID_LUT[0] = 1  # module constants are read-only


def test_map_label_and_unknown_ids(tmp_path: Path) -> None:
    spec = parse_data_spec(f"camvid:{_camvid(tmp_path)}")
    raw = np.array([[0, 3, 8], [9, 11, 10]], dtype=np.uint8)
    np.testing.assert_array_equal(map_label(raw, spec, "x.png"), [[5, 1, 7], [6, 255, 6]])
    raw[0, 0] = 40
    with pytest.raises(DataError) as err:
        map_label(raw, spec, tmp_path / "bad.png")
    msg = _msg(err)
    assert str(tmp_path / "bad.png") in msg and "40" in msg and "0..11" in msg


def _camvid(root: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    rng = np.random.default_rng(0)
    for s in splits:
        for i in range(2):
            _png(root / s / f"f{i}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            _png(root / f"{s}annot" / f"f{i}.png", rng.integers(0, 12, (H, W), dtype=np.uint8))
    return root


def _cityscapes(root: Path) -> Path:
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", np.zeros((H, W, 3), np.uint8))
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", np.full((H, W), 7, np.uint8))
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", np.zeros((H, W), np.uint8))
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", np.zeros((H, W, 3), np.uint8))
    return root


# ----------------------------------------------------------------------------- specs


def test_synthetic_spec() -> None:
    spec = parse_data_spec("synthetic")
    assert spec.kind == "synthetic" and spec.root is None
    with pytest.raises(DataError):
        list_pairs(spec, "train")


def test_missing_dir_message() -> None:
    with pytest.raises(DataError) as err:
        parse_data_spec("camvid:/x")
    assert _msg(err) == "data=camvid:/x: directory /x does not exist"


def test_unknown_forms(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError) as err:
        parse_data_spec(str(tmp_path / "junk"))
    assert "accepted forms" in _msg(err) and str(tmp_path / "junk") in _msg(err)
    with pytest.raises(DataError) as err:
        parse_data_spec("kitti:/data")
    assert "kitti" in _msg(err)
    with pytest.raises(DataError) as err:
        parse_data_spec(str(tmp_path / "nowhere"))
    assert "does not exist" in _msg(err)


def test_autodetect(tmp_path: Path) -> None:
    assert parse_data_spec(str(_camvid(tmp_path / "cv"))).kind == "camvid"
    assert parse_data_spec(str(_cityscapes(tmp_path / "cs"))).kind == "cityscapes"
    folder = parse_data_spec(str(make_folder(tmp_path / "myset")))
    assert (folder.kind, folder.name) == ("folder", "myset")
    assert folder.splits == {"train": ("images/train", "masks/train"), "val": ("images/val", "masks/val")}


def test_cityscapes_pairs(tmp_path: Path) -> None:
    spec = parse_data_spec(f"cityscapes:{_cityscapes(tmp_path)}")
    assert set(spec.splits) == {"train", "val"}
    ((img, lbl),) = list_pairs(spec, "val")  # _labelTrainIds/_color files are not labels
    assert img.name == "frankfurt_000000_000019_leftImg8bit.png"
    assert lbl.name == "frankfurt_000000_000019_gtFine_labelIds.png"
    assert (map_label(read_label(lbl), spec, lbl) == 1).all()  # road -> flat


def test_camvid_pairs_and_missing_split(tmp_path: Path) -> None:
    spec = parse_data_spec(f"camvid:{_camvid(tmp_path)}")
    pairs = list_pairs(spec, "train")
    assert [(i.name, l.parent.name) for i, l in pairs] == [("f0.png", "trainannot"), ("f1.png", "trainannot")]
    with pytest.raises(DataError) as err:
        list_pairs(spec, "test")
    msg = _msg(err)
    assert str(tmp_path / "test") in msg and "train, val" in msg


def test_folder_pairs_sorted(tmp_path: Path) -> None:
    spec = parse_data_spec(f"folder:{make_folder(tmp_path)}")
    pairs = list_pairs(spec, "train")
    assert [p[0].name for p in pairs] == ["f000.png", "f001.png", "f002.png"]
    assert all(l == tmp_path / "masks" / "train" / i.name for i, l in pairs)
    assert map_label(read_label(pairs[0][1]), spec, pairs[0][1]).max() <= 7


def test_folder_jpg_images_with_png_masks(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": 1})
    (tmp_path / "images" / "train" / "f000.png").rename(tmp_path / "images" / "train" / "f000.jpg")
    ((img, lbl),) = list_pairs(parse_data_spec(f"folder:{tmp_path}"), "train")
    assert (img.name, lbl.name) == ("f000.jpg", "f000.png")


def test_image_without_label(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "masks" / "train" / "f001.png").unlink()
    with pytest.raises(DataError) as err:
        list_pairs(parse_data_spec(f"folder:{tmp_path}"), "train")
    msg = _msg(err)
    assert "f001.png" in msg and "1 image(s) without a label" in msg and "visionlab data check" in msg


def test_label_without_image(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "images" / "val" / "f000.png").unlink()
    with pytest.raises(DataError) as err:
        list_pairs(parse_data_spec(f"folder:{tmp_path}"), "val")
    assert str(tmp_path / "masks" / "val" / "f000.png") in _msg(err)


def test_many_unpaired_are_counted(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": 8})
    for i in range(8):
        (tmp_path / "masks" / "train" / f"f{i:03d}.png").unlink()
    (tmp_path / "masks" / "train" / "other.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        list_pairs(parse_data_spec(f"folder:{tmp_path}"), "train")
    assert "8 image(s)" in _msg(err) and "and 3 more" in _msg(err)


def test_empty_split(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "images" / "test").mkdir()
    (tmp_path / "masks" / "test").mkdir()
    (tmp_path / "images" / "test" / "README.txt").write_text("nothing here")
    with pytest.raises(DataError) as err:
        list_pairs(parse_data_spec(f"folder:{tmp_path}"), "test")
    assert "no images" in _msg(err) and str(tmp_path / "images" / "test") in _msg(err)


def test_missing_mask_dir(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "images" / "extra").mkdir()
    _png(tmp_path / "images" / "extra" / "a.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DataError) as err:
        list_pairs(parse_data_spec(f"folder:{tmp_path}"), "extra")
    assert str(tmp_path / "masks" / "extra") in _msg(err)


def test_folder_labels_yaml(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": 1}, max_id=3)
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump({"mapping": {0: "sky", 1: 7}, "ignore": [2]}))
    spec = parse_data_spec(str(tmp_path))
    assert spec.valid_ids == {0, 1, 2}
    raw = np.array([[0, 1, 2]], np.uint8)
    np.testing.assert_array_equal(map_label(raw, spec, "m.png"), [[5, 7, 255]])
    with pytest.raises(DataError):
        map_label(np.array([[3]], np.uint8), spec, "m.png")


@pytest.mark.parametrize(
    "cfg,needle",
    [({"mapping": {0: "skyy"}}, "skyy"), ({"mapping": {300: 1}}, "300"), ({"mappings": {0: 1}}, "mappings"),
     ({"mapping": {0: 1}, "ignore": [0]}, "both"), ({"mapping": [1, 2]}, "dict")],
)
def test_folder_labels_yaml_errors(tmp_path: Path, cfg: dict, needle: str) -> None:
    make_folder(tmp_path, {"train": 1})
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError) as err:
        parse_data_spec(f"folder:{tmp_path}")
    assert needle in _msg(err) and str(tmp_path / "labels.yaml") in _msg(err)


def test_dataset_yaml(tmp_path: Path) -> None:
    make_folder(tmp_path / "data" / "road", max_id=3)
    cfg = {"path": "data/road", "train": "images/train", "val": "images/val"}
    cfg |= {"mapping": {0: "flat", 1: "sky"}, "ignore": [2]}
    (tmp_path / "road.yaml").write_text(yaml.safe_dump(cfg))
    spec = parse_data_spec(str(tmp_path / "road.yaml"))
    assert (spec.kind, spec.name, spec.root) == ("folder", "road", tmp_path / "data" / "road")
    assert spec.splits["val"] == ("images/val", "masks/val")  # masks dir derived Ultralytics-style
    assert len(list_pairs(spec, "train")) == 3
    assert spec.lut[:3].tolist() == [1, 5, 255]


def test_dataset_yaml_formats_and_masks(tmp_path: Path) -> None:
    _camvid(tmp_path / "cv")
    (tmp_path / "cv.yaml").write_text("path: cv\nformat: camvid\n")
    spec = parse_data_spec(str(tmp_path / "cv.yaml"))
    assert spec.kind == "camvid" and set(spec.splits) == {"train", "val"} and spec.lut is CAMVID_LUT
    (tmp_path / "cv2.yaml").write_text("path: cv\nformat: camvid\ntrain: train\nmasks: {train: trainannot}\n")
    spec2 = parse_data_spec(str(tmp_path / "cv2.yaml"))
    assert spec2.splits == {"train": ("train", "trainannot")} and len(list_pairs(spec2, "train")) == 2


@pytest.mark.parametrize(
    "text,needle",
    [("path: .\nnames: [a]\n", "names"), ("format: kitti\n", "kitti"), ("path: nowhere\n", "does not exist"),
     ("train: [1]\n", "train"), ("- a\n", "mapping"), ("path: .\ntrain: pics/train\n", "masks")],
)
def test_dataset_yaml_errors(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(DataError) as err:
        parse_data_spec(str(tmp_path / "d.yaml"))
    assert needle in _msg(err)


def test_dataspec_is_frozen() -> None:
    spec = parse_data_spec("synthetic")
    assert isinstance(spec, DataSpec)
    with pytest.raises(AttributeError):
        spec.kind = "camvid"  # type: ignore[misc]


# ----------------------------------------------------------------------------- real data


def test_real_camvid_pairs() -> None:
    spec = parse_data_spec(f"camvid:{shared_path('data', 'camvid')}")
    train, val = list_pairs(spec, "train"), list_pairs(spec, "val")
    assert (len(train), len(val)) == (367, 101)
    assert all(i.name == l.name and l.parent.name == i.parent.name + "annot" for i, l in train + val)
    raw = read_label(val[0][1])
    assert raw.shape == (360, 480) and raw.max() <= 11
    cats = map_label(raw, spec, val[0][1])
    np.testing.assert_array_equal(cats, CAMVID_LUT[raw])
    assert set(np.unique(cats).tolist()) <= {*range(8), 255}


def test_real_cityscapes_sample_matches_train_ids() -> None:
    root = shared_path("data", "cityscapes_sample")
    spec = parse_data_spec(f"cityscapes:{root}")
    ((img, lbl),) = list_pairs(spec, "val")
    cats = map_label(read_label(lbl), spec, lbl)
    # Category histogram stated in SOURCE.md (hand-checked by the data provider).
    assert np.bincount(cats.ravel(), minlength=8).tolist() == [3874, 12368, 12788, 584, 664, 581, 107, 1802]

    # Independent route: trainIds -> categories (0,1 flat; 2-4 construction; 5-7 object; 8,9 nature;
    # 10 sky; 11,12 human; 13-18 vehicle).
    train_to_cat = np.full(256, 255, np.uint8)
    train_to_cat[:19] = [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7, 7, 7]
    train_ids = read_label(lbl.with_name(lbl.name.replace("_labelIds", "_labelTrainIds")))
    expected = train_to_cat[train_ids]
    valid = train_ids != 255
    # The two PNGs were downscaled separately (SOURCE.md: 99.8 % agreement), so ~50 boundary
    # pixels differ; every trainId's dominant category must still be exactly the expected one.
    assert (cats[valid] == expected[valid]).mean() > 0.995
    for t in np.unique(train_ids[valid]):
        got = np.bincount(cats[train_ids == t], minlength=256).argmax()
        assert got == train_to_cat[t], f"trainId {t}"
