"""Segmentation dataset over any layout (Cityscapes, CamVid, folder, YAML) or the synthetic scenes.

Images are resized to ``imgsz`` when loaded (the first step of every pipeline), so the RAM cache holds
network-sized images: CamVid fits in ~70 MB and Cityscapes in a few GB instead of 18 GB. Evaluation
labels stay at native resolution: metrics are computed against the real label, not a resized one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from visionlab.data.categories import CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES
from visionlab.data.segmentation_layouts import DataSpec, list_pairs, map_label, parse_data_spec
from visionlab.data.io import read_image, read_label
from visionlab.data.transforms import resize_image, train_transform
from visionlab.utils.progress import track

SYNTHETIC_SEED_BASE = {"train": 0, "val": 1_000_000, "test": 2_000_000}  # splits never share scenes


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return mask if mask.shape == (h, w) else cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def rare_focus(cfg: Any) -> tuple[float, list[int]] | None:
    """(probability, the category ids that do not count) for crops placed on ``rare_categories``."""
    p = getattr(cfg, "rare_crop", 0.0)
    if not p:
        return None
    rare = {CATEGORY_NAMES.index(name) for name in cfg.rare_categories}
    return p, [c for c in range(NUM_CATEGORIES) if c not in rare] + [IGNORE_INDEX]


class SegmentationDataset(Dataset):
    """Samples are ``{"image": uint8 3xHxW, "target": uint8 HxW category ids (255 ignore), "index": i}``."""

    def __init__(self, cfg: Any, split: str, train: bool, spec: DataSpec | None = None):
        self.spec = spec or parse_data_spec(cfg.data)
        self.size = tuple(cfg.imgsz)
        self.train = train
        self.split = split
        self.transform = train_transform(cfg, mask_fill=IGNORE_INDEX, focus=rare_focus(cfg)) if train else None
        if self.spec.kind == "synthetic":
            from visionlab.data.io import DataError

            from visionlab.data.synthetic_base import check_render_size

            if split not in SYNTHETIC_SEED_BASE:
                raise DataError(f"data=synthetic has splits train, val and test, not '{split}'")
            check_render_size(self.size)
            n = cfg.synthetic_train if split == "train" else cfg.synthetic_val
            base = SYNTHETIC_SEED_BASE[split]
            self.items: list[Any] = [base + i for i in range(n)]
        else:
            self.items = list_pairs(self.spec, split)
        if train and cfg.fraction < 1.0:  # a seeded subset, the same for every run with this seed
            keep = np.random.default_rng(cfg.seed).permutation(len(self.items))[: max(1, round(len(self.items) * cfg.fraction))]
            self.items = [self.items[i] for i in sorted(keep)]
        # decoded samples, filled by prefetch() (each DDP rank: only the indices it reads) or on first use
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cfg.cache else None

    def __len__(self) -> int:
        return len(self.items)

    def name_of(self, index: int) -> str:
        item = self.items[index]
        return f"scene_{item:07d}" if isinstance(item, int) else item[0].stem

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[index]
        if isinstance(item, int):
            from visionlab.data.synthetic import render_scene

            scene = render_scene(item, *self.size)
            return scene.image, scene.mask
        image_path, label_path = item
        image = read_image(image_path)
        mask = map_label(read_label(label_path), self.spec, label_path)
        if image.shape[:2] != mask.shape:
            from visionlab.data.io import DataError

            raise DataError(
                f"{label_path}: label is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]} (run `visionlab data check` to list every problem)"
            )
        image = resize_image(image, self.size)
        return image, resize_mask(mask, self.size) if self.train else mask

    def prefetch(self, indices: list[int]) -> None:
        """Decode ``indices`` into the RAM cache (no-op with cache=false)."""
        todo = [i for i in indices if self.cache is not None and i not in self.cache]
        if not todo:
            return
        # PIL/OpenCV decoding releases the GIL: threads use both cores without pickling arrays around
        with ThreadPoolExecutor(max_workers=4) as pool:
            loaded = track(pool.map(self._load, todo), total=len(todo), description=f"caching {self.split} ({len(todo)} images)")
            self.cache.update(zip(todo, loaded))

    def _get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        sample = self._load(index)
        if self.cache is not None and torch.utils.data.get_worker_info() is None:  # a worker's copy would be lost
            self.cache[index] = sample
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self._get(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "target": torch.from_numpy(np.ascontiguousarray(mask)),
            "index": index,
        }

    def category_frequencies(self) -> np.ndarray:
        """Pixel fraction of each of the 8 categories (ignored pixels excluded)."""
        counts = np.zeros(256, dtype=np.int64)
        for i in range(len(self)):
            counts += np.bincount(self._get(i)[1].ravel(), minlength=256)
        counts[IGNORE_INDEX] = 0
        freq = counts[:NUM_CATEGORIES].astype(np.float64)
        return freq / max(freq.sum(), 1)
