"""visionlab.data.io: reading images/labels, and one clear DataError per kind of broken file."""

from __future__ import annotations

import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionlab.data import io as vio
from visionlab.data.io import DataError, image_size, read_image, read_label

H, W = 40, 48


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(path)
    return path


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny file whose header claims width x height RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def _assert_names(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- images


def test_read_image_rgb_roundtrip(tmp_path: Path) -> None:
    arr = _rgb()
    out = read_image(_save(tmp_path / "a.png", arr))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, arr)
    out[0, 0] = 0  # returned arrays are writable copies


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1"])
def test_read_image_converts_modes_to_rgb(tmp_path: Path, mode: str) -> None:
    path = _save(tmp_path / "a.png", _rgb(), mode)
    out = read_image(path)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8


def test_read_image_grey_and_16bit(tmp_path: Path) -> None:
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = read_image(_save(tmp_path / "g.png", grey))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    deep = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 30)
    Image.fromarray(deep).save(tmp_path / "d.png")
    out16 = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(out16[..., 0], (deep >> 8).astype(np.uint8))


def test_jpeg_and_other_suffixes(tmp_path: Path) -> None:
    for suffix in (".jpg", ".bmp", ".tif", ".webp"):
        path = _save(tmp_path / f"a{suffix}", _rgb())
        assert read_image(path).shape == (H, W, 3)
        assert image_size(path) == (H, W)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(DataError) as err:
        read_image(path)
    assert "does not exist" in _assert_names(err, path)
    assert err.value.kind == "missing"
    assert isinstance(err.value, ValueError)
    copy = pickle.loads(pickle.dumps(err.value))
    assert (str(copy), copy.kind) == (str(err.value), "missing")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_image(tmp_path)
    _assert_names(err, tmp_path)


def test_corrupt_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.png"
    path.write_bytes(np.random.default_rng(1).bytes(600))
    with pytest.raises(DataError) as err:
        read_image(path)
    assert "not a readable image" in _assert_names(err, path)
    assert err.value.kind == "corrupt"
    with pytest.raises(DataError):
        image_size(path)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(DataError) as err:
        read_label(path)
    _assert_names(err, path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    full = _save(tmp_path / f"full{suffix}", _rgb())
    path = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert image_size(path) == (H, W)  # the header is intact ...
    with pytest.raises(DataError) as err:  # ... but a full decode must fail
        read_image(path)
    assert "truncated" in _assert_names(err, path)
    assert err.value.kind == "truncated"


def test_decompression_bomb_rejected_from_header(tmp_path: Path) -> None:
    path = _bomb_png(tmp_path / "bomb.png", 30_000, 30_000)  # 900 Mpx claimed, ~100 bytes on disk
    pil_limit = Image.MAX_IMAGE_PIXELS
    for fn in (read_image, read_label):
        with pytest.raises(DataError) as err:
            fn(path)
        assert "30000x30000" in _assert_names(err, path)
        assert err.value.kind == "too_large"
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global is restored


def test_max_image_pixels_monkeypatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "a.png", _rgb())
    monkeypatch.setattr(vio, "MAX_IMAGE_PIXELS", H * W - 1)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert "VISIONLAB_MAX_IMAGE_PIXELS" in _assert_names(err, path)
    monkeypatch.setattr(vio, "MAX_IMAGE_PIXELS", H * W)
    assert read_image(path).shape == (H, W, 3)


def test_limit_above_pil_limit_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Our limit replaces PIL's: a user raising it must not hit PIL's DecompressionBombError.
    path = _save(tmp_path / "a.png", _rgb())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).shape == (H, W, 3)


def test_max_pixels_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONLAB_MAX_IMAGE_PIXELS", "1000")
    assert vio._max_pixels_from_env() == 1000
    monkeypatch.setenv("VISIONLAB_MAX_IMAGE_PIXELS", "lots")
    with pytest.warns(UserWarning, match="VISIONLAB_MAX_IMAGE_PIXELS"):
        assert vio._max_pixels_from_env() == 89_478_485
    monkeypatch.delenv("VISIONLAB_MAX_IMAGE_PIXELS")
    assert vio._max_pixels_from_env() == 89_478_485


# ----------------------------------------------------------------------------- labels


def _ids() -> np.ndarray:
    return (np.arange(H * W) % 12).astype(np.uint8).reshape(H, W)


def test_read_label_grey(tmp_path: Path) -> None:
    out = read_label(_save(tmp_path / "l.png", _ids()))
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, _ids())


def test_read_label_palette_keeps_indices(tmp_path: Path) -> None:
    img = Image.frombytes("P", (W, H), _ids().tobytes())
    img.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), _ids())


def test_read_label_16bit(tmp_path: Path) -> None:
    Image.fromarray(_ids().astype(np.uint16)).save(tmp_path / "l16.png")
    np.testing.assert_array_equal(read_label(tmp_path / "l16.png"), _ids())
    Image.fromarray((_ids().astype(np.uint16) * 1000)).save(tmp_path / "inst.png")
    with pytest.raises(DataError) as err:
        read_label(tmp_path / "inst.png")
    _assert_names(err, tmp_path / "inst.png")


def test_read_label_grey_saved_as_rgb_is_accepted(tmp_path: Path) -> None:
    ids = _ids()
    path = _save(tmp_path / "rgbgrey.png", np.repeat(ids[..., None], 3, axis=2))
    np.testing.assert_array_equal(read_label(path), ids)


def test_read_label_colour_rgb_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path / "colour.png", _rgb())
    with pytest.raises(DataError) as err:
        read_label(path)
    assert "expected a single-channel label-id PNG, got RGB colours" in _assert_names(err, path)


def test_image_size_from_header(tmp_path: Path) -> None:
    assert image_size(_save(tmp_path / "a.png", _rgb())) == (H, W)
    with pytest.raises(DataError) as err:
        image_size(tmp_path / "missing.png")
    _assert_names(err, tmp_path / "missing.png")


def test_exif_orientation_only_when_asked(tmp_path: Path) -> None:
    """Predict and the server turn phone photos upright; datasets and pseudo labels keep the stored pixels
    (their label maps have no EXIF)."""
    from visionlab.engine.predictor import ImageFiles, image_loader

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(path, exif=exif.tobytes())
    assert read_image(path).shape == (40, 64, 3)
    assert read_image(path, upright=True).shape == (64, 40, 3)
    assert ImageFiles([(path, "phone")], upright=True)[0]["image"].shape == (64, 40, 3)  # visionlab TASK predict
    assert image_loader([(path, "phone")], 1, 0).dataset[0]["image"].shape == (40, 64, 3)  # pseudo-label


@pytest.mark.parametrize("task", ["segment", "depth"])
def test_synthetic_scenes_too_small_is_one_line(task: str, tmp_path: Path) -> None:
    from conftest import run_cli

    code, out = run_cli(task, "train", "imgsz=[16,24]", "epochs=1", f"project={tmp_path}")
    assert code == 2 and "need at least 32 px a side, got imgsz=[16, 24]" in out and "Traceback" not in out
