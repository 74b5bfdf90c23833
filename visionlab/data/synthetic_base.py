"""What the procedural street scenes (visionlab.data.synthetic) and indoor rooms (visionlab.data.synthetic_rooms)
share: the Scene record, the category ids they paint, the cheap scalar RNG, value noise and the camera finish
(haze, exposure, white balance, blur, sensor noise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visionlab.data.categories import CATEGORY_NAMES

FLAT, CONSTRUCTION, OBJECT, NATURE, SKY, HUMAN, VEHICLE = (
    CATEGORY_NAMES.index(n) for n in ("flat", "construction", "object", "nature", "sky", "human", "vehicle"))
SKY_DEPTH = 1000.0  # metres: the sky, far beyond any surface (trained on as ~zero disparity, not scored)
MIN_SIDE = 32  # the renderers' smallest scene side


def check_render_size(size: tuple[int, int]) -> None:
    """DataError (one line naming imgsz) when the synthetic scenes cannot be rendered at ``size``."""
    if min(size) < MIN_SIDE:
        from visionlab.data.io import DataError

        raise DataError(f"data=synthetic: scenes are rendered at imgsz and need at least {MIN_SIDE} px a side, "
                        f"got imgsz={list(size)}")


def pal(*rgb: int) -> np.ndarray:
    return np.array(rgb, np.float32).reshape(-1, 3)


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing the numpy fields would raise
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW uint8 category ids (categories.CATEGORY_NAMES)
    depth: np.ndarray  # HxW float32 metres along the optical axis; sky = SKY_DEPTH


class Rand:
    """Scalar draws served from a pre-drawn pool: much cheaper than one Generator call per number."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.pool = rng, []

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if not self.pool:
            self.pool = self.rng.random(512).tolist()
        return lo + (hi - lo) * self.pool.pop()

    def int(self, lo: int, hi: int) -> int:  # in [lo, hi)
        return int(self.u(lo, hi))

    def pick(self, palette: np.ndarray, lo: float = 0.85, hi: float = 1.1) -> np.ndarray:
        return palette[self.int(0, len(palette))] * np.float32(self.u(lo, hi))


def smooth_noise(rng: np.random.Generator, h: int, w: int, gh: int, gw: int) -> np.ndarray:
    """Value noise in [0, 1): a random (gh+1)x(gw+1) grid upsampled with smoothstep weights."""
    g = rng.random((gh + 1, gw + 1), dtype=np.float32)
    ys, xs = (np.linspace(0, m, n, endpoint=False, dtype=np.float32) for m, n in ((gh, h), (gw, w)))
    y0, x0 = ys.astype(np.intp), xs.astype(np.intp)
    fy, fx = ys - np.floor(ys), xs - np.floor(xs)  # stays float32 (ys - y0 would upcast)
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], fx * fx * (3 - 2 * fx)
    gx = g[:, x0] * (1 - fx) + g[:, x0 + 1] * fx  # along x at grid resolution first: cheap
    return gx[y0] * (1 - fy) + gx[y0 + 1] * fy


def labels(shape: tuple[int, int], *regions) -> np.ndarray:
    """Label image: pixel = index (1-based) of the last region containing it, 0 = none."""
    lab = np.zeros(shape, np.uint8)
    for i, region in enumerate(regions, 1):
        np.copyto(lab, i, where=region)
    return lab


def finish(c: Any, rng: np.random.Generator, r: Rand) -> np.ndarray:
    """``c`` (img 3xHxW float32, depth, hor_col, h, w) -> HxWx3 uint8: haze/fog by depth, exposure, white
    balance, slight blur and sensor noise."""
    img, foggy = c.img, r.u() < 0.25
    vis, amount = (r.u(40, 250), r.u(0.6, 0.95)) if foggy else (r.u(500, 2000), r.u(0.3, 0.7))
    img += amount * (1 - np.exp(-c.depth / vis)) * ((c.hor_col * np.float32(r.u(0.9, 1.05)))[:, None, None] - img)
    t, k = r.u(-0.08, 0.08), np.float32(r.u(-0.4, 0.6))  # colour temperature (warm +), blur strength
    gain = np.float32(r.u(0.65, 1.2)) * np.float32([1 + t, 1 + 0.2 * t, 1 - t])
    if k > 0:  # separable [k/4, 1-k/2, k/4] blur
        s = img[:, :-2] + img[:, 2:]
        img[:, 1:-1] *= 1 - k / 2
        img[:, 1:-1] += s * (k / 4)
        s = img[..., :-2] + img[..., 2:]
        img[..., 1:-1] *= 1 - k / 2
        img[..., 1:-1] += s * (k / 4)
    noise = (rng.random((c.h, c.w), dtype=np.float32) - 0.5) * np.float32(r.u(1.0, 10.0)) + np.float32(0.5)
    out = np.empty((c.h, c.w, 3), np.uint8)
    for ch in range(3):  # planar float -> interleaved uint8 one channel at a time (faster than a transpose)
        np.copyto(out[..., ch], np.clip(img[ch] * gain[ch] + noise, 0, 255), casting="unsafe")
    return out
