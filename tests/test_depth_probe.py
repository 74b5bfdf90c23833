"""benchmarks/depth_probe.py: AdaBN re-estimates BatchNorm statistics as the plain mean / variance of the images;
the ensemble averages per-image normalised disparities."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from depth_probe import adabn, ensemble  # noqa: E402


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


class _Fixed(torch.nn.Module):
    """A 'model' that ignores its input and returns a fixed 1x1x2x2 disparity map."""

    def __init__(self, values: list[float]):
        super().__init__()
        self.map = torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.map.expand(x.shape[0], 1, 2, 2)


def test_ensemble_averages_median_mad_normalised_maps() -> None:
    # [1,2,3,10]: lower median 2 -> [-1,0,1,8], mean |.| 2.5 -> [-0.4,0,0.4,3.2]
    # [5,5,7,9] * 100 (its scale must not matter): median 500 -> [0,0,200,400], MAD 150 -> [0,0,4/3,8/3]
    out = ensemble([_Fixed([1, 2, 3, 10]), _Fixed([500, 500, 700, 900])])(torch.zeros(3, 3, 2, 2))
    expected = (torch.tensor([-0.4, 0.0, 0.4, 3.2]) + torch.tensor([0.0, 0.0, 4 / 3, 8 / 3])) / 2
    assert out.shape == (3, 1, 2, 2)
    torch.testing.assert_close(out[2].flatten(), expected)
