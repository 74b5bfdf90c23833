"""benchmarks/depth_probe.py: AdaBN re-estimates BatchNorm statistics as the plain mean / variance of the images."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from depth_probe import adabn  # noqa: E402


def test_adabn_statistics_are_those_of_the_resized_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths, pixels = [], []
    for i in range(5):  # batches of 2, 2, 1
        img = rng.integers(0, 256, (20 + 4 * i, 30, 3), dtype=np.uint8)
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(img).save(paths[-1])
        pixels.append(cv2.resize(img, (12, 8), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float64))
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).eval()
    model[0].running_mean.fill_(7.0)
    adapted = adabn(model, paths, [8, 12], batch=2)
    # momentum=None: BatchNorm's cumulative average, each batch's mean and unbiased variance counting once
    batches = [np.concatenate(pixels[i:i + 2]) for i in range(0, 5, 2)]
    np.testing.assert_allclose(adapted[0].running_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(adapted[0].running_var.numpy(), np.mean([b.var(0, ddof=1) for b in batches], 0),
                               rtol=1e-5)
    assert not adapted.training
    assert model[0].running_mean[0].item() == 7.0  # the original is untouched
