"""Albumentations pipelines for dense tasks: the same geometric transform hits image and mask."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2

from visionlab.data.categories import IGNORE_INDEX

cv2.setNumThreads(0)  # dataloader workers already run in parallel; OpenCV threads would oversubscribe 2 cores


def train_transform(cfg: Any) -> A.Compose:
    """Images arrive already resized to ``imgsz`` (at load time, so the cache is small). Then:
    random rescale -> pad (ignore label) -> random crop to ``crop`` (or imgsz) -> flip -> photometric noise.
    Training on crops of the imgsz-sized image keeps objects at the scale seen at evaluation time."""
    h, w = cfg.crop or cfg.imgsz
    if not cfg.augment:
        same = tuple(cfg.crop or cfg.imgsz) == tuple(cfg.imgsz)
        return A.Compose([] if same else [A.RandomCrop(h, w)])
    lo, hi = cfg.scale
    ops: list[A.BasicTransform] = [
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0),
        A.PadIfNeeded(h, w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(h, w),
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
