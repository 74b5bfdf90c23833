"""Reading images and label maps with clear, one-line errors about the user's data.

Every failure on a user's file (missing, not an image, corrupt, truncated, too large, wrong label
format) becomes a :class:`DataError` naming the file and what was expected, so the CLI can print it
without a traceback and ``visionlab data check`` can classify it (``DataError.kind``).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default decompression-bomb limit


class DataError(ValueError):
    """A problem with a user's data. The message names the file or directory and what was expected.

    ``kind`` classifies the problem for ``visionlab data check``: one of missing, unreadable,
    corrupt, truncated, too_large, bad_label (and layout-level kinds used by layouts.py).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
        self.kind = kind

    def __reduce__(self) -> tuple:  # keep ``kind`` across pickling (DataLoader worker processes)
        return (type(self), (str(self), self.kind))


def _max_pixels_from_env() -> int:
    raw = os.environ.get("VISIONLAB_MAX_IMAGE_PIXELS")
    if raw is None or raw.strip() == "":
        return _DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
        if value <= 0:
            raise ValueError
        return value
    except ValueError:
        # Not fatal at import (it would break every command, even --help), but never silent.
        warnings.warn(
            f"VISIONLAB_MAX_IMAGE_PIXELS={raw!r} is not a positive integer; "
            f"using the default {_DEFAULT_MAX_PIXELS}",
            stacklevel=2,
        )
        return _DEFAULT_MAX_PIXELS


MAX_IMAGE_PIXELS: int = _max_pixels_from_env()

# PIL's bomb limit is a process-global. We lift it only while reading the header (under a lock so
# our worker threads never race on it) and apply our own, overridable limit instead; otherwise a
# user raising VISIONLAB_MAX_IMAGE_PIXELS above 2x PIL's limit would still hit PIL's hard error.
_PIL_LIMIT_LOCK = threading.Lock()

# Exceptions PIL raises for undecodable data (PNG chunk errors are SyntaxError, zlib errors, ...).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


def _open(path: Path, fp: BinaryIO | None = None, pixel_limit: bool = True) -> Image.Image:
    """Open (header only) and enforce the pixel limit before anything is decoded (``pixel_limit=False``: the
    caller checks its own limit on ``img.size`` before decoding, as the server does)."""
    source = fp if fp is not None else path
    try:
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                img = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist (expected an image file)", "missing") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an image file", "unreadable") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied reading the file", "unreadable") from None
    except UnidentifiedImageError:
        raise DataError(
            f"{path}: not a readable image (corrupt or unknown format); "
            f"expected one of {', '.join(IMAGE_SUFFIXES)}",
            "corrupt",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: {e}", "too_large") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: corrupt image header ({type(e).__name__}: {e})", "corrupt") from None
    w, h = img.size
    if pixel_limit and w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise DataError(
            f"{path}: image header says {w}x{h} = {w * h:,} pixels, more than the limit of "
            f"{MAX_IMAGE_PIXELS:,} (decompression-bomb guard; raise VISIONLAB_MAX_IMAGE_PIXELS "
            "if the file is genuine)",
            "too_large",
        )
    return img


def _decode(img: Image.Image, path: Path) -> None:
    """Force a full decode so truncated/corrupt pixel data fails here, not later in training."""
    try:
        img.load()  # LOAD_TRUNCATED_IMAGES deliberately left False: a cut file must fail
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: {e}", "too_large") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode the image", "too_large") from None
    except _DECODE_ERRORS as e:
        msg = str(e)
        if isinstance(e, EOFError) or "truncated" in msg.lower():
            raise DataError(f"{path}: truncated image file ({msg}); re-copy or re-export it", "truncated") from None
        raise DataError(f"{path}: corrupt image data ({type(e).__name__}: {msg})", "corrupt") from None


def _image_to_rgb(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16/32-bit grey: PIL's convert("RGB") would clip, so rescale the 16-bit range to 8 bits.
        grey = np.asarray(img).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            msg = "32-bit grey image with values outside 0..65535; expected an 8-bit RGB image"
            raise DataError(f"{path}: {msg}", "unreadable")
        grey = (grey >> 8 if grey.size and grey.max() > 255 else grey).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise DataError(f"{path}: floating-point image; expected an 8-bit RGB/grey image", "unreadable")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")  # honours palette transparency without PIL's warning
    if img.mode != "RGB":
        img = img.convert("RGB")  # grey, RGBA (alpha dropped), CMYK, YCbCr, 1-bit, ...
    return np.array(img, dtype=np.uint8)  # copy: PIL's buffer is read-only


def _read_image(path: PathLike, fp: BinaryIO | None = None, upright: bool = False) -> np.ndarray:
    path = Path(path)
    with _open(path, fp) as img:
        _decode(img, path)
        return _image_to_rgb(upright_image(img) if upright else img, path)


def upright_image(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (phone photos); itself when there is nothing to turn or
    the EXIF block is broken (a readable image is never rejected for its metadata)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def read_image(path: PathLike, upright: bool = False) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB (grey, RGBA, palette, 16-bit converted).

    ``upright``: apply the EXIF orientation, as predict and the server do for photos. Off for datasets and
    pseudo labels: label maps have no EXIF, so turning only the image would misalign image and label.
    Raises DataError for a missing file, a non-image, corrupt or truncated data, or more pixels
    than MAX_IMAGE_PIXELS (checked from the header before decoding).
    """
    return _read_image(path, upright=upright)


def _label_to_ids(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in ("L", "P"):
        return np.array(img, dtype=np.uint8)  # for P the palette *index* is the label id
    if mode == "1":
        return np.array(img, dtype=np.uint8)
    if mode in ("LA", "PA"):
        return np.array(img.getchannel(0), dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        ids = np.asarray(img)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 255):
            raise DataError(
                f"{path}: 16/32-bit label with ids {int(ids.min())}..{int(ids.max())}; "
                "expected label ids 0..255 (instance-id PNGs are not label maps)",
                "bad_label",
            )
        return ids.astype(np.uint8)
    if mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(img)[..., :3]
        r = rgb[..., 0]
        if np.array_equal(r, rgb[..., 1]) and np.array_equal(r, rgb[..., 2]):
            return r.copy()  # grey saved as RGB: accept
        raise DataError(
            f"{path}: expected a single-channel label-id PNG, got RGB colours "
            "(convert the colour-coded mask to label ids first)",
            "bad_label",
        )
    msg = f"label image mode {mode!r} unsupported; expected a single-channel label-id PNG"
    raise DataError(f"{path}: {msg}", "bad_label")


def _read_label(path: PathLike, fp: BinaryIO | None = None) -> np.ndarray:
    path = Path(path)
    with _open(path, fp) as img:
        _decode(img, path)
        return _label_to_ids(img, path)


def read_label(path: PathLike) -> np.ndarray:
    """Read a label map as HxW uint8 raw label ids.

    Accepts 8-bit grey, palette (index = id), 1-bit, 16/32-bit with values < 256, and RGB whose
    three channels are equal. A colour RGB label raises DataError naming the file.
    """
    return _read_label(path)


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) from the file header only (nothing decoded); DataError if unreadable."""
    path = Path(path)
    with _open(path) as img:
        w, h = img.size
    return h, w


def read_bytes(path: PathLike) -> bytes:
    """Read a whole file, turning OS errors into DataError (used by check to hash + decode once)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist", "missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})", "unreadable") from None


def read_image_bytes(path: PathLike, data: bytes) -> np.ndarray:
    """read_image on bytes already in memory (``path`` is only used in messages)."""
    return _read_image(path, io.BytesIO(data))


def read_label_bytes(path: PathLike, data: bytes) -> np.ndarray:
    """read_label on bytes already in memory (``path`` is only used in messages)."""
    return _read_label(path, io.BytesIO(data))
