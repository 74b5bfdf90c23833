"""Image resizing and the albumentations pipeline of dense tasks: the same geometric transform hits image
and mask (the mask's padding value is the caller's: 255 = ignore for segmentation)."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

cv2.setNumThreads(0)  # dataloader workers already run in parallel; OpenCV threads would oversubscribe 2 cores


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to exactly (H, W): area interpolation when shrinking (no aliasing), bilinear otherwise."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = image.shape[0] > h and image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


MAX_ASPECT = 4.0  # keep_aspect: longer side at most this times the shorter one


def aspect_size(h: int, w: int, short_side: int, multiple: int = 1, max_aspect: float = MAX_ASPECT) -> tuple[int, int]:
    """Size keeping the aspect ratio of an h x w image: scaled so both sides are >= ``short_side`` (the shorter
    one equal to it), each rounded to the nearest multiple of ``multiple`` (up when rounding would go below
    ``short_side``). Depth Anything's ``Resize(keep_aspect_ratio, 'lower_bound', ensure_multiple_of=14)``.
    Beyond ``max_aspect`` : 1 the longer side is capped (the image is squeezed along it): a 1-pixel-high strip
    must not become a network input of millions of pixels."""
    scale = max(short_side / h, short_side / w)

    def rounded(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)  # np.round: half to even, as the official code
        return int(np.ceil(x / multiple) * multiple) if y < short_side else y

    cap = short_side * max_aspect
    return rounded(min(h * scale, cap)), rounded(min(w * scale, cap))


def train_transform(cfg: Any, mask_fill: int, focus: tuple[float, list[int]] | None = None) -> A.Compose:
    """Images arrive already resized to ``imgsz`` (at load time, so the cache is small). Then:
    random rescale -> pad (masks get ``mask_fill``: the ignore label, or 0 = invalid depth) -> random crop to
    ``crop`` (or imgsz) -> flip -> photometric noise. ``focus=(p, common_values)``: with probability p the crop
    is placed to contain a mask pixel whose value is not in ``common_values`` (a rare category), when the
    image has one. Geometry is shared by the image and every mask (labels,
    depth target, valid mask), masks always nearest-neighbour: a label or a depth is never blended. Training
    on crops of the imgsz-sized image keeps objects at the scale seen at evaluation time."""
    h, w = cfg.crop or cfg.imgsz
    if not cfg.augment:
        same = tuple(cfg.crop or cfg.imgsz) == tuple(cfg.imgsz)
        return A.Compose([] if same else [A.RandomCrop(h, w)])
    lo, hi = cfg.scale
    ops: list[A.BasicTransform] = [
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(h, w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=mask_fill),
        _crop(h, w, focus),
        A.HorizontalFlip(p=cfg.hflip),
    ]
    if cfg.colour_jitter > 0:
        j = cfg.colour_jitter
        ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.05, j / 6), p=0.8))
    if cfg.blur_noise > 0:
        ops.append(
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.06))], p=cfg.blur_noise)
        )
    return A.Compose(ops)


def _crop(h: int, w: int, focus: tuple[float, list[int]] | None) -> A.BasicTransform:
    if not focus or focus[0] <= 0:
        return A.RandomCrop(h, w)
    p, common = focus
    return A.OneOf([A.CropNonEmptyMaskIfExists(h, w, ignore_values=list(common), p=p),
                    A.RandomCrop(h, w, p=1.0 - p)], p=1.0)
