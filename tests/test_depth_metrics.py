"""Depth metrics against hand-computed values: errors, alignment, masks, crops, CIs, per-source keys."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from visionlab.metrics.depth import METRIC_KEYS, DepthMetrics, depth_errors, eval_crop_mask


def _batch(targets: list[torch.Tensor], valids: list[torch.Tensor] | None = None, space: int = 0,
           sources: list[str] | None = None) -> dict:
    valids = valids or [t > 0 for t in targets]
    return {"target": [t[None] for t in targets], "valid": [v[None] for v in valids],
            "space": torch.tensor([space] * len(targets)), "index": torch.arange(len(targets)),
            "source": sources or ["s"] * len(targets)}


# pred = [1, 2, 4, 3], gt = [1, 1, 2, 2]: diff [0, 1, 2, 1], ratios max(p/g, g/p) = [1, 2, 2, 1.5]
HAND = {
    "absrel": (0 + 1 + 1 + 0.5) / 4,
    "sqrel": (0 + 1 + 2 + 0.5) / 4,
    "rmse": math.sqrt((0 + 1 + 4 + 1) / 4),
    "rmse_log": math.sqrt((0 + 2 * math.log(2) ** 2 + math.log(1.5) ** 2) / 4),
    "log10": (2 * math.log10(2) + math.log10(1.5)) / 4,
    "delta1": 1 / 4,  # only ratio 1 < 1.25
    "delta2": 2 / 4,  # 1.5 < 1.5625
    "delta3": 2 / 4,  # 2 > 1.953125
}


def test_depth_errors_hand_computed() -> None:
    got = depth_errors(torch.tensor([1.0, 2.0, 4.0, 3.0]), torch.tensor([1.0, 1.0, 2.0, 2.0]))
    assert set(got) == set(METRIC_KEYS)
    for key, value in HAND.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_update_without_alignment_and_per_image_averaging() -> None:
    gt = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    pred_depth = torch.tensor([[1.0, 2.0], [4.0, 3.0]])
    m = DepthMetrics("cpu", align="none")
    m.update((1 / pred_depth)[None, None], _batch([gt]))  # outputs are disparity
    out = m.compute()
    for key, value in HAND.items():
        assert out[key] == pytest.approx(value, rel=1e-6), key
    # a second image with 1 valid pixel (absrel 0) weighs as much as the first: mean (0.625 + 0) / 2
    gt2 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    m.update(torch.full((1, 1, 2, 2), 0.5), _batch([gt2]))
    out = m.compute()
    assert out["absrel"] == pytest.approx(0.625 / 2)
    assert out["images"] == 2
    assert [r["absrel"] for r in m.records] == pytest.approx([0.625, 0.0])


def test_lsq_disparity_recovers_scaled_shifted_disparity_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 12, 16, generator=g) * 9 + 1
    outputs = (2.0 / depth + 0.3)[:, None]  # relative disparity: unknown scale and shift
    m = DepthMetrics("cpu", align="lsq_disparity")
    m.update(outputs, _batch(list(depth)))
    out = m.compute()
    assert out["absrel"] == pytest.approx(0.0, abs=1e-6) and out["delta1"] == 1.0 and out["rmse"] < 1e-5
    # disparity ground truth (space=1) is compared in depth = 1/disparity: same result
    m2 = DepthMetrics("cpu", align="lsq_disparity")
    m2.update(outputs, _batch(list(1 / depth), space=1))
    assert m2.compute()["absrel"] == pytest.approx(0.0, abs=1e-6)
    # without alignment the same outputs are wrong
    m3 = DepthMetrics("cpu", align="none")
    m3.update(outputs, _batch(list(depth)))
    assert m3.compute()["absrel"] > 0.3


def test_lsq_depth_and_median_alignment() -> None:
    depth = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1)) * 5 + 1
    m = DepthMetrics("cpu", align="median")
    m.update((1 / (3 * depth))[:, None], _batch(list(depth)))  # metric up to scale 3
    assert m.compute()["absrel"] == pytest.approx(0.0, abs=1e-6)
    m = DepthMetrics("cpu", align="lsq_depth")
    m.update((1 / (2 * depth + 1))[:, None], _batch(list(depth)))  # depth off by scale and shift
    assert m.compute()["absrel"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="align"):
        DepthMetrics("cpu", align="mean")


def test_masks_respected_and_prediction_upsampled_to_native_size() -> None:
    gt = torch.full((8, 12), 2.0)
    valid = torch.zeros(8, 12, dtype=torch.bool)
    valid[2:5, 3:9] = True
    gt_garbage = torch.where(valid, gt, torch.full_like(gt, 123.0))
    m = DepthMetrics("cpu", align="none")
    m.update(torch.full((1, 1, 4, 6), 1 / 2.5), _batch([gt_garbage], [valid]))  # 4x6 output, 8x12 target
    out = m.compute()
    assert out["absrel"] == pytest.approx(0.25)  # |2.5 - 2| / 2 on valid pixels only
    assert m.records[0]["pixels"] == 18
    # an image with no valid pixel is not scored (and does not produce NaN)
    m.update(torch.ones(1, 1, 4, 6), _batch([gt], [torch.zeros(8, 12, dtype=torch.bool)]))
    assert m.compute()["images"] == 1 and m.empty_images == 1


def test_clamp_to_depth_range() -> None:
    # negative aligned disparity is clamped to 1/max_depth -> depth max_depth
    gt = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    m = DepthMetrics("cpu", align="none")
    batch = _batch([gt])
    batch["max_depth"] = torch.tensor([10.0])
    batch["min_depth"] = torch.tensor([float("nan")])
    m.update(torch.full((1, 1, 2, 2), 1 / 100.0), batch)  # 100 m everywhere -> clamped to 10
    assert m.compute()["absrel"] == pytest.approx(np.mean([9 / 1, 8 / 2, 6 / 4, 2 / 8]))
    m = DepthMetrics("cpu", align="none")
    m.update(torch.full((1, 1, 2, 2), 1 / 100.0), _batch([gt]))  # no range given: no clamp
    assert m.compute()["absrel"] == pytest.approx(np.mean([99 / 1, 98 / 2, 96 / 4, 92 / 8]))
    # lsq_disparity without a range: aligned disparity <= 0 is capped at the farthest ground truth (8 m)
    from visionlab.metrics.depth import align_prediction

    depth = align_prediction(torch.tensor([3.0, 2.0, 1.0, 0.0, -5.0]), torch.tensor([1.0, 2.0, 4.0, 8.0, 8.0]),
                             "lsq_disparity")
    assert float(depth.max()) == pytest.approx(8.0) and bool((depth > 0).all())


def test_eval_crops_select_the_standard_regions() -> None:
    eigen = eval_crop_mask(480, 640, "eigen")
    rows, cols = np.flatnonzero(eigen.any(1)), np.flatnonzero(eigen.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (45, 470, 41, 600)  # [45:471, 41:601]
    assert eigen.sum() == 426 * 560
    garg = eval_crop_mask(375, 1242, "garg")
    rows, cols = np.flatnonzero(garg.any(1)), np.flatnonzero(garg.any(0))
    # 0.40810811*375 = 153.04, 0.99189189*375 = 371.96, 0.03594771*1242 = 44.65, 0.96405229*1242 = 1197.35
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (153, 370, 44, 1196)
    assert garg.sum() == (371 - 153) * (1197 - 44)
    assert eval_crop_mask(5, 7, None).all()
    with pytest.raises(ValueError, match="eval_crop"):
        eval_crop_mask(5, 7, "kitti")


def test_bootstrap_ci_brackets_mean_and_per_source_keys() -> None:
    g = torch.Generator().manual_seed(2)
    depth = torch.rand(6, 8, 8, generator=g) * 4 + 1
    noise = 1 + 0.3 * torch.rand(6, 8, 8, generator=g) * torch.arange(6).reshape(6, 1, 1) / 5  # varied error
    outputs = (1 / (depth * noise))[:, None]
    sources = ["nyu", "nyu", "nyu", "kitti", "kitti", "kitti"]
    m = DepthMetrics("cpu", align="none")
    m.update(outputs[:3], _batch(list(depth[:3]), sources=sources[:3]))
    m.update(outputs[3:], _batch(list(depth[3:]), sources=sources[3:]))
    out = m.compute()
    per = [r["absrel"] for r in m.records]
    assert out["absrel"] == pytest.approx(np.mean(per))
    for key in METRIC_KEYS:
        assert out[f"{key}_ci_low"] <= out[key] <= out[f"{key}_ci_high"], key
    assert out["absrel_ci_low"] < out["absrel_ci_high"]
    assert out["nyu/absrel"] == pytest.approx(np.mean(per[:3]))
    assert out["kitti/absrel"] == pytest.approx(np.mean(per[3:]))
    assert out["kitti/delta1"] == pytest.approx(np.mean([r["delta1"] for r in m.records[3:]]))
    assert m.compute() == out  # seeded bootstrap: deterministic
    best, worst = m.extremes(2)
    assert best[0]["absrel"] == min(per) and worst[0]["absrel"] == max(per)
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    m.report(console)
    text = console.file.getvalue()
    assert "absrel" in text and "kitti" in text and "per source" in text
