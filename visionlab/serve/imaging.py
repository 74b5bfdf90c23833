"""Turning an uploaded file into a safe HxWx3 uint8 RGB array, or a 4xx reason.

Order matters: size is checked before anything is read into PIL, the type is taken from the file's first
bytes (never the client's Content-Type or file name), the pixel count from the header before a single
pixel is decoded (decompression bombs), and only then is the image decoded. The decoding itself is
``visionlab.data.io``'s (corrupt / truncated / 16-bit / palette handling), plus the EXIF rotation phone
photos need (training data skips it because label maps have no EXIF; an upload has no label).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from visionlab.data.io import DataError

# magic bytes -> format name; what a browser or a camera sends. Anything else is 415.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"WEBP", 8, "webp"),  # RIFF....WEBP
)
ACCEPTED_TYPES = ("png", "jpeg", "bmp", "tiff", "webp")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 2**20  # 20 MiB: a full-resolution phone photo fits
    max_pixels: int = 40_000_000  # 40 MP; a 3-channel uint8 image of that size is 120 MB in RAM
    min_side: int = 8  # below this no model sees anything


class UploadError(ValueError):
    """A rejected upload: ``status`` is the HTTP code, ``code`` a short machine-readable reason."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(" ".join(message.split()))
        self.status, self.code = status, code


def sniff(data: bytes) -> str | None:
    """The image format from the first bytes, or None."""
    for magic, offset, name in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic and (name != "webp" or data[:4] == b"RIFF"):
            return name
    return None


def decode_upload(data: bytes, filename: str = "upload", limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """Uploaded bytes -> HxWx3 uint8 RGB (EXIF orientation applied), or UploadError (413 / 415 / 422 / 400)."""
    from visionlab.data.io import _decode, _image_to_rgb, _open, upright_image  # the project's safe decoding steps

    name = filename or "upload"
    if not data:
        raise UploadError(400, "empty", f"{name}: the uploaded file is empty")
    if len(data) > limits.max_bytes:
        raise UploadError(413, "too_large", f"{name}: {len(data):,} bytes, more than the limit of {limits.max_bytes:,}")
    kind = sniff(data)
    if kind is None:
        raise UploadError(415, "unsupported_type", f"{name}: not a supported image (the file's content is none of "
                                                   f"{', '.join(ACCEPTED_TYPES)})")
    try:
        # header only; the server's max_pixels replaces data.io's process-wide guard (whose message would
        # name a server environment variable to the client)
        with _open(name, io.BytesIO(data), pixel_limit=False) as img:
            w, h = img.size
            if w * h > limits.max_pixels:
                raise UploadError(413, "too_many_pixels", f"{name}: {w}x{h} = {w * h:,} pixels, more than the "
                                                          f"limit of {limits.max_pixels:,}")
            if min(w, h) < limits.min_side:
                raise UploadError(422, "too_small", f"{name}: {w}x{h} image; need at least {limits.min_side} px a side")
            _decode(img, name)
            return _image_to_rgb(upright_image(img), name)  # as `visionlab TASK predict` reads photos
    except DataError as e:
        status = {"too_large": 413, "missing": 400}.get(e.kind, 422)
        raise UploadError(status, e.kind, str(e)) from None
    except MemoryError:
        raise UploadError(413, "too_large", f"{name}: not enough memory to decode the image") from None
