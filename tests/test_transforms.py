"""The training pipeline moves image and mask together: after rescale/crop/flip, every labelled pixel
still sits on the colour it had in the image; padding is labelled ignore; crops have the crop size."""

from __future__ import annotations

import numpy as np

from visionlab.cfg import build_config
from visionlab.data.categories import CATEGORY_COLOURS, IGNORE_INDEX
from visionlab.data.transforms import aspect_size, train_transform
from visionlab.tasks.segment import SegmentConfig


def _cfg(**kw):
    base = {"imgsz": [96, 128], "colour_jitter": 0.0, "blur_noise": 0.0, "hflip": 0.5}
    return build_config(SegmentConfig, "segment", {**base, **kw})


def _blocky_scene(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.kron(rng.integers(0, 8, (h // 16, w // 16)), np.ones((16, 16), dtype=np.int64)).astype(np.uint8)
    return CATEGORY_COLOURS[mask], mask


def test_geometry_is_shared_by_image_and_mask() -> None:
    image, mask = _blocky_scene()
    t = train_transform(_cfg(scale=[0.5, 1.5], crop=[64, 96]), mask_fill=255)
    t.set_random_seed(0)
    for _ in range(20):
        out = t(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert img.shape == (64, 96, 3) and m.shape == (64, 96)
        labelled = m != IGNORE_INDEX
        match = (img == CATEGORY_COLOURS[np.where(labelled, m, 0)]).all(-1)
        # bilinear image vs nearest mask differ only along block edges (a misaligned pair scores ~0.2)
        assert match[labelled].mean() > 0.75
        assert (img[~labelled] == 0).all()  # padding: black image, ignore label


def test_augment_off_keeps_the_image() -> None:
    image, mask = _blocky_scene()
    out = train_transform(_cfg(augment=False), mask_fill=255)(image=image, mask=mask)
    assert (out["image"] == image).all() and (out["mask"] == mask).all()


def _scene_with_one_small_person(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((h, w), 1, dtype=np.uint8)  # flat everywhere
    mask[80:88, 120:124] = 6  # one small "human" in the bottom-right corner
    return CATEGORY_COLOURS[mask], mask


def test_rare_crop_places_crops_on_rare_categories() -> None:
    from visionlab.data.segmentation import rare_focus

    image, mask = _scene_with_one_small_person()
    hits = {}
    for p in (0.0, 1.0):
        cfg = _cfg(scale=[1.0, 1.0], crop=[32, 32], hflip=0.0, rare_crop=p)
        t = train_transform(cfg, mask_fill=IGNORE_INDEX, focus=rare_focus(cfg))
        t.set_random_seed(0)
        hits[p] = sum(bool((t(image=image, mask=mask)["mask"] == 6).any()) for _ in range(40))
    assert hits[1.0] == 40  # every focused crop holds the person
    assert hits[0.0] < 10  # a uniform 32x32 crop of 96x128 rarely does


def test_rare_focus_and_bad_categories() -> None:
    import pytest

    from visionlab.cfg import ConfigError
    from visionlab.data.segmentation import rare_focus

    assert rare_focus(_cfg()) is None
    p, common = rare_focus(_cfg(rare_crop=0.5, rare_categories=["human"]))
    assert p == 0.5 and 6 not in common and IGNORE_INDEX in common and set(common) == {0, 1, 2, 3, 4, 5, 7, 255}
    with pytest.raises((ConfigError, ValueError), match="rare_categories"):
        _cfg(rare_categories=["pole"])


def test_aspect_size_lower_bound_and_multiples() -> None:
    assert aspect_size(425, 640, 518, 14) == (518, 784)  # Depth Anything's own size for its demo photo
    assert aspect_size(360, 480, 192, 32) == (192, 256)
    assert aspect_size(100, 300, 50, 14) == (56, 154)  # 50 -> 3.57 patches -> 4; 150 -> 10.7 -> 11
    assert aspect_size(300, 100, 45, 14) == (140, 56)  # 45 rounds down to 42 < 45: up to 56 instead
    assert aspect_size(50, 70, 50) == (50, 70)  # multiple 1: the shorter side exactly
    assert aspect_size(375, 1242, 192, 32) == (192, 640)  # KITTI's 3.3:1 frames keep their shape
    assert aspect_size(1, 100_000, 518, 14) == (518, 2072)  # a strip is capped at 4:1, not 518 x 51.8M pixels
    assert aspect_size(100_000, 10, 32, 8, max_aspect=2.0) == (64, 32)


def test_infer_keeps_aspect_per_image_and_batches_equal_sizes() -> None:
    import torch

    from visionlab.tasks.base import get_task

    class Recorder(torch.nn.Module):
        input_multiple = 8

        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.shapes.append(tuple(x.shape))
            logits = torch.zeros(x.shape[0], 8, *x.shape[2:])
            logits[:, 2] = x[:, 0] / 255  # category 2 wherever the red channel is non-zero
            return logits

    images = [np.zeros((40, 60, 3), np.uint8), np.full((60, 40, 3), 255, np.uint8), np.zeros((40, 60, 3), np.uint8)]
    model, task = Recorder(), get_task("segment")
    out = task.infer(model, images, (32, 32), keep_aspect=True)
    assert model.shapes == [(2, 3, 32, 48), (1, 3, 48, 32)]  # the two landscape images share one pass
    assert [o.shape for o in out] == [(40, 60), (60, 40), (40, 60)]
    assert (out[1] == 2).all() and (out[0] == 0).all() and (out[2] == 0).all()  # results in input order
    model.shapes.clear()
    task.infer(model, images, (32, 32))
    assert model.shapes == [(3, 3, 32, 32)]
