"""Real-photo textures on the synthetic rooms (visionlab.data.textures): sampling by hand, determinism, exact
depth kept, bad folders and files, and the dataset / config path."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import png

from visionlab.data.depth import DepthDataset
from visionlab.data.io import DataError
from visionlab.data.synthetic_rooms import render_room
from visionlab.data.textures import TextureBank, sample_texture


def _photos(folder, n: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        png(folder / f"p{i}.png", np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    return folder


def test_sample_texture_by_hand():
    img = np.arange(2 * 3, dtype=np.float32).reshape(2, 3, 1).repeat(3, axis=2)  # rows [0 1 2], [3 4 5]
    # tile 3 m over the 3-px longer side: 1 px per metre; b (height) runs up the image, a along its columns
    a = np.float32([0.2, 1.2, 2.2, 3.2, 5.2, 0.2, 0.2])
    b = np.float32([0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0])
    got = sample_texture(img, a, b, tile=3.0, offset=(0.0, 0.0))
    assert got.shape == (3, 7) and np.array_equal(got[0], img[..., 0][[0, 0, 0, 0, 0, 1, 1], [0, 1, 2, 2, 0, 0, 0]])
    # u = 3 mirrors to column 2, u = 5 to column 0; v = 2 mirrors to row 1 (no seam at the tile edge)


def test_rooms_with_textures_keep_depth_and_are_deterministic(tmp_path):
    bank = TextureBank(_photos(tmp_path / "photos"), max_side=32)
    assert len(bank) == 3 and max(bank.get(0).shape[:2]) == 32  # downscaled once, kept
    textured = [render_room(s, 48, 64, textures=bank) for s in range(4)]
    plain = [render_room(s, 48, 64) for s in range(4)]
    for t, p in zip(textured, plain):
        assert np.array_equal(t.depth, p.depth) and np.array_equal(t.mask, p.mask)  # geometry untouched
    assert any(not np.array_equal(t.image, p.image) for t, p in zip(textured, plain))
    again = render_room(2, 48, 64, textures=TextureBank(tmp_path / "photos", max_side=32))
    assert np.array_equal(again.image, textured[2].image)  # the same seed and bank give the same pixels


def test_bank_skips_corrupt_and_names_bad_folders(tmp_path):
    folder = _photos(tmp_path / "photos", n=1)
    (folder / "p0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    png(folder / "p1.png", np.full((8, 8, 3), 200, np.uint8))
    bank = TextureBank(folder)
    assert bank.get(0).mean() == 200  # the corrupt file is passed over for the next readable one
    (folder / "p1.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="none of the 2 images"):
        TextureBank(folder).get(0)
    with pytest.raises(DataError, match="synthetic_textures: .*missing_dir: not a directory"):
        TextureBank(tmp_path / "missing_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="synthetic_textures: .*no images"):
        TextureBank([tmp_path / "empty"])


def test_dataset_paints_rooms_from_config(tmp_path):
    from visionlab.cfg import build_config, parse_overrides
    from visionlab.tasks.depth import DepthConfig

    folder = _photos(tmp_path / "photos")
    cfg = build_config(DepthConfig, "depth", parse_overrides(
        ["data=synthetic", f"synthetic_textures={folder}", "synthetic_rooms=1.0", "synthetic_train=2",
         "imgsz=[32,48]", "cache=false"]))
    assert cfg.synthetic_textures == (str(folder),)  # one folder becomes a list of one
    ds = DepthDataset(cfg, "train", train=False)
    plain = DepthDataset(SimpleNamespace(**{**cfg.model_dump(), "synthetic_textures": None}), "train", train=False)
    assert ds.textures is not None and len(ds.textures) == 3 and plain.textures is None
    assert np.array_equal(ds[0]["target"], plain[0]["target"])
    assert not all(np.array_equal(ds[i]["image"], plain[i]["image"]) for i in range(2))
