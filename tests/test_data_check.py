"""visionlab.data.segmentation_check: every broken file becomes a Problem of the right kind; manifest contents."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from visionlab.data import io as vio
from visionlab.data.segmentation_check import FREQ_NAMES, Problem, check_dataset, run_check
from visionlab.data.io import DataError

from conftest import png as _png, shared_path

H, W = 40, 48


def _pair(
    root: Path, split: str, stem: str, h: int = H, w: int = W, lh: int | None = None, seed: int = 0
) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    img = _png(root / "images" / split / f"{stem}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    lbl = _png(root / "masks" / split / f"{stem}.png", rng.integers(0, 8, (lh or h, w), dtype=np.uint8))
    return img, lbl


def make_clean(root: Path) -> Path:
    for i in range(3):
        _pair(root, "train", f"ok{i}", seed=i)
    _pair(root, "val", "ok0", seed=9)
    return root


def by_kind(problems: list[Problem]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(p.kind, []).append(p.path)
    return out


def test_clean_dataset(tmp_path: Path) -> None:
    root = make_clean(tmp_path / "clean")
    problems, m = check_dataset(f"folder:{root}", progress=False)
    assert problems == []
    assert m["dataset"]["name"] == "clean" and m["dataset"]["kind"] == "folder"
    assert m["splits"]["train"]["pairs"] == m["splits"]["train"]["ok_pairs"] == 3
    assert m["splits"]["train"]["image_sizes"] == {f"{W}x{H}": 3}
    assert sum(m["total"]["category_frequencies"].values()) == pytest.approx(1.0)
    assert sum(m["total"]["category_pixels"].values()) == 4 * H * W
    assert list(m["total"]["category_frequencies"]) == list(FREQ_NAMES)
    assert len(m["files"]) == 8
    img = root / "images" / "val" / "ok0.png"
    assert m["files"]["images/val/ok0.png"] == hashlib.sha256(img.read_bytes()).hexdigest()


def test_every_broken_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_clean(tmp_path / "broken")
    tr = root / "images" / "train"
    (tr / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(500))
    _png(root / "masks" / "train" / "corrupt.png", np.zeros((H, W), np.uint8))
    img, _ = _pair(root, "train", "cut")
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    _pair(root, "train", "huge", h=120, w=120)  # too many pixels once the limit is patched below
    _, lbl = _pair(root, "train", "unknown")
    _png(lbl, np.full((H, W), 9, np.uint8))
    _pair(root, "train", "mismatch", lh=H + 2)
    _pair(root, "train", "tiny", h=20, w=20)
    _, lbl = _pair(root, "train", "colour")
    _png(lbl, np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
    _pair(root, "train", "nolabel")[1].unlink()
    _pair(root, "train", "noimage")[0].unlink()
    (root / "images" / "test").mkdir()
    (tr / "notes.txt").write_text("not an image: listed in the manifest, not a problem")
    monkeypatch.setattr(vio, "MAX_IMAGE_PIXELS", 100 * 100)

    problems, m = check_dataset(str(root), progress=False)
    kinds = by_kind(problems)
    name = lambda split, stem, d="images": str(root / d / split / f"{stem}.png")  # noqa: E731
    assert kinds["corrupt"] == [name("train", "corrupt")]
    assert kinds["truncated"] == [name("train", "cut")]
    assert kinds["too_large"] == [name("train", "huge"), name("train", "huge", "masks")]  # label too
    assert kinds["unknown_label_ids"] == [name("train", "unknown", "masks")]
    assert kinds["size_mismatch"] == [name("train", "mismatch", "masks")]
    assert kinds["too_small"] == [name("train", "tiny")]
    assert kinds["bad_label"] == [name("train", "colour", "masks")]
    assert kinds["unpaired_image"] == [name("train", "nolabel")]
    assert kinds["unpaired_label"] == [name("train", "noimage", "masks")]
    assert kinds["empty_split"] == [str(root / "images" / "test")]
    assert len(problems) == 11
    detail = {p.kind: p.detail for p in problems}
    assert "9" in detail["unknown_label_ids"] and "RGB colours" in detail["bad_label"]
    assert f"{W}x{H + 2}" in detail["size_mismatch"]

    tm = m["splits"]["train"]
    assert tm["ok_pairs"] == 3 and tm["problems"] == 10 and tm["problems_by_kind"]["corrupt"] == 1
    assert tm["other_files"] == ["images/train/notes.txt"]
    assert sum(tm["category_frequencies"].values()) == pytest.approx(1.0)
    assert "images/train/corrupt.png" in m["files"]  # even broken files are hashed
    assert len(m["problems"]) == 11


def test_missing_label_dir_and_unknown_split(tmp_path: Path) -> None:
    root = make_clean(tmp_path)
    _png(root / "images" / "extra" / "a.png", np.zeros((H, W, 3), np.uint8))
    problems, _ = check_dataset(f"folder:{root}", splits=["extra"], progress=False)
    assert [(p.kind, Path(p.path).name) for p in problems] == [("unpaired_image", "a.png")]
    assert str(root / "masks" / "extra") in problems[0].detail
    with pytest.raises(DataError) as err:
        check_dataset(f"folder:{root}", splits=["nope"], progress=False)
    assert "nope" in str(err.value) and "train" in str(err.value)


def test_bad_spec_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        check_dataset(f"camvid:{tmp_path / 'x'}", progress=False)
    assert str(tmp_path / "x") in str(err.value)
    with pytest.raises(DataError):
        check_dataset("synthetic", progress=False)


def test_run_check_writes_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_clean(tmp_path / "ds")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    buf = io.StringIO()
    assert run_check(str(root), None, Console(file=buf, width=200)) == 0
    out = work / "runs" / "data" / "ds_manifest.json"
    manifest = json.loads(out.read_text())
    assert manifest["total"]["ok_pairs"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["ds_manifest.json"]  # no temp file left
    assert not list(root.rglob("*.json"))  # nothing written into the dataset
    assert "no problems" in buf.getvalue()

    (root / "masks" / "val" / "ok0.png").unlink()
    buf = io.StringIO()
    custom = tmp_path / "m" / "custom.json"
    assert run_check(f"folder:{root}", custom, Console(file=buf, width=200)) == 1
    text = buf.getvalue()
    assert "unpaired_image" in text and "images/val/ok0.png" in text
    assert json.loads(custom.read_text())["problems"][0]["kind"] == "unpaired_image"


def test_progress_bar_runs(tmp_path: Path) -> None:
    root = make_clean(tmp_path)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    problems, _ = check_dataset(f"folder:{root}", progress=True, console=console)
    assert problems == [] and "train" in buf.getvalue()


def test_real_camvid_val_is_clean() -> None:
    root = shared_path("data", "camvid")
    problems, m = check_dataset(f"camvid:{root}", splits=["val"], progress=False)
    assert problems == []
    val = m["splits"]["val"]
    assert val["pairs"] == val["ok_pairs"] == 101
    assert val["image_sizes"] == {"480x360": 101}
    assert sum(val["category_frequencies"].values()) == pytest.approx(1.0)
    assert val["category_frequencies"]["ignore"] == pytest.approx(0.017, abs=0.001)  # SOURCE.md: void 1.7 %
    assert len(m["files"]) == 202


def test_real_cityscapes_sample_histogram() -> None:
    root = shared_path("data", "cityscapes_sample")
    problems, m = check_dataset(f"cityscapes:{root}", progress=False)
    assert problems == []
    pixels = m["total"]["category_pixels"]
    assert [pixels[c] for c in FREQ_NAMES[:8]] == [3874, 12368, 12788, 584, 664, 581, 107, 1802]
