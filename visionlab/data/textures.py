"""Real photographs as surface textures for the synthetic rooms (domain randomisation, Tobin et al. 2017).

Why: a model trained on procedural colours learns what *those* surfaces look like; on real frames it falls
back to "lower in the image = nearer". Painting the ray-cast surfaces with crops of real, unlabeled photos
(the same images the teacher later pseudo-labels; never the evaluation frames) keeps the exact geometry and
depth but takes away the texture shortcut. ``synthetic_textures=DIR`` (or a list of folders) turns it on.

The bank reads each image once per process, downscaled so its longer side is ``max_side`` (a wall seen at
192x256 needs no more), and keeps it: ~90 KB per image at 256 px, 45 MB for 500 images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from visionlab.data.io import DataError, PathLike, read_image
from visionlab.data.transforms import resize_image

TEXTURED_SHARE = 0.6  # share of a room's materials (lamps excepted) painted with a photo


class TextureBank:
    """The images under one or more folders (recursive, sorted), served as float32 HxWx3 arrays."""

    def __init__(self, folders: PathLike | Sequence[PathLike], max_side: int = 256) -> None:
        from visionlab.data.depth import list_unlabeled

        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        if not folders:
            raise DataError("synthetic_textures: empty list; expected a folder of images (or a list of folders)",
                            "missing")
        self.paths: list[Path] = []
        for folder in folders:
            try:
                self.paths += list_unlabeled(folder, expected="a folder of real photos")
            except DataError as e:
                raise DataError(f"synthetic_textures: {e}", "missing") from None
        self.max_side = max_side
        self._cache: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> np.ndarray:
        """Image ``index`` (wrapping); a file that cannot be read is replaced by the next readable one."""
        for k in range(len(self.paths)):
            i = (index + k) % len(self.paths)
            if i not in self._cache:
                try:
                    img = read_image(self.paths[i])
                    s = self.max_side / max(img.shape[:2])
                    if s < 1:
                        img = resize_image(img, (round(img.shape[0] * s), round(img.shape[1] * s)))
                    self._cache[i] = img.astype(np.float32)
                except DataError:
                    self._cache[i] = None  # corrupt / truncated: never used as a texture
            if self._cache[i] is not None:
                return self._cache[i]  # type: ignore[return-value]
        raise DataError(f"synthetic_textures: none of the {len(self.paths)} images could be read", "corrupt")


def sample_texture(img: np.ndarray, a: np.ndarray, b: np.ndarray, tile: float, offset: tuple[float, float]
                   ) -> np.ndarray:
    """Colours (3, n) of ``img`` at surface coordinates (a, b) in metres: the image spans ``tile`` metres along
    its longer side, mirrored at the edges so the tiling has no seams (nearest pixel: the camera finish blurs)."""
    h, w = img.shape[:2]
    px = max(h, w) / tile  # pixels per metre
    u = (a * px + offset[0] * w).astype(np.int64)
    v = (-b * px + offset[1] * h).astype(np.int64)  # image rows grow downwards, world height upwards
    u, v = u % (2 * w), v % (2 * h)
    u = np.where(u < w, u, 2 * w - 1 - u)
    v = np.where(v < h, v, 2 * h - 1 - v)
    return img[v, u].T
