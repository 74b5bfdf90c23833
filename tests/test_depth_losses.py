"""Depth losses: invariances, trimming, gradient matching, silog, masks and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visionlab.losses.depth import (
    DepthLoss,
    fit_scale_shift,
    gradient_matching_loss,
    scale_shift_invariant_loss,
    silog_loss,
    target_disparity,
)


def _smooth(b: int = 2, h: int = 16, w: int = 20, seed: int = 0) -> torch.Tensor:
    """A positive, smooth-ish disparity map Bx1xHxW."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 1, 4, 5, generator=g) + 0.2
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def _mask(shape: tuple[int, ...], seed: int = 1, p: float = 0.7) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p


def test_ssi_zero_for_scaled_shifted_target_and_invariant_to_pred_affine() -> None:
    gt = _smooth()
    valid = _mask(gt.shape)
    assert scale_shift_invariant_loss(3.0 * gt + 0.7, gt, valid).item() == pytest.approx(0.0, abs=1e-5)
    pred = _smooth(seed=5)
    base = scale_shift_invariant_loss(pred, gt, valid).item()
    assert base > 0.01
    for s, t in ((2.0, 0.0), (0.1, 5.0), (7.0, -3.0)):
        assert scale_shift_invariant_loss(s * pred + t, gt, valid).item() == pytest.approx(base, rel=1e-4)
    # invalid pixels do not matter: garbage there changes nothing
    garbage = torch.where(valid, gt, torch.full_like(gt, 1e4))
    assert scale_shift_invariant_loss(pred, garbage, valid).item() == pytest.approx(base, rel=1e-5)


def test_ssi_hand_computed_2x2_with_one_invalid_pixel() -> None:
    # valid p = [0, 1, 2], target [1, 2, 4]: s = 3/2, t = 5/6, residuals [-1/6, 1/3, -1/6] -> mean |r| = 2/9
    pred = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 2.0], [4.0, 100.0]]]])
    valid = torch.tensor([[[[True, True], [True, False]]]])
    s, t = fit_scale_shift(pred, target, valid)
    assert s.item() == pytest.approx(1.5) and t.item() == pytest.approx(5 / 6)
    assert scale_shift_invariant_loss(pred, target, valid).item() == pytest.approx(2 / 9, rel=1e-6)


def test_trim_drops_exactly_the_largest_share() -> None:
    # p = [0, 1, 2, 3]; e = [1, -3, 3, -1] is orthogonal to p and to 1, so target = p - e fits with s=1, t=0
    # and the residuals are exactly |e| = [1, 3, 3, 1].
    pred = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 2, 2)
    target = torch.tensor([-1.0, 4.0, -1.0, 4.0]).reshape(1, 1, 2, 2)
    valid = torch.ones_like(pred, dtype=torch.bool)
    s, t = fit_scale_shift(pred, target, valid)
    assert s.item() == pytest.approx(1.0, abs=1e-6) and t.item() == pytest.approx(0.0, abs=1e-6)
    assert scale_shift_invariant_loss(pred, target, valid, trim=0.0).item() == pytest.approx(2.0)
    assert scale_shift_invariant_loss(pred, target, valid, trim=0.1).item() == pytest.approx(2.0)  # floor(0.4)=0
    assert scale_shift_invariant_loss(pred, target, valid, trim=0.25).item() == pytest.approx(5 / 3)  # drop one 3
    assert scale_shift_invariant_loss(pred, target, valid, trim=0.5).item() == pytest.approx(1.0)  # drop both 3s


def test_trim_counts_valid_pixels_only_per_image() -> None:
    # 10 valid residuals 1..10 around an exact fit (+ invalid pixels with huge values): trim 0.1 drops the 10
    torch.manual_seed(0)
    n = 10
    p = torch.arange(n, dtype=torch.float64)
    e = torch.randn(n, dtype=torch.float64)
    basis = torch.stack([p, torch.ones(n, dtype=torch.float64)], 1)
    e = e - basis @ torch.linalg.lstsq(basis, e).solution  # orthogonal to p and 1 -> fit is s=1, t=0
    pred = torch.cat([p, torch.zeros(6, dtype=torch.float64)]).float().reshape(1, 1, 4, 4)
    target = torch.cat([p - e, torch.full((6,), 1e3, dtype=torch.float64)]).float().reshape(1, 1, 4, 4)
    valid = torch.tensor([True] * n + [False] * 6).reshape(1, 1, 4, 4)
    r = e.abs().sort().values
    loss = scale_shift_invariant_loss(pred, target, valid, trim=0.1).item()
    assert loss == pytest.approx(float(r[:9].mean()), rel=1e-4)


def test_median_variant_is_scale_shift_invariant() -> None:
    gt, pred = _smooth(), _smooth(seed=9)
    valid = _mask(gt.shape)
    assert scale_shift_invariant_loss(4 * gt - 1, gt, valid, align="median").item() == pytest.approx(0.0, abs=1e-5)
    base = scale_shift_invariant_loss(pred, gt, valid, align="median").item()
    assert base > 0.01
    assert scale_shift_invariant_loss(5 * pred + 2, gt, valid, align="median").item() == pytest.approx(base, rel=1e-4)


def test_gradient_matching_zero_for_affine_copy_positive_for_blur() -> None:
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 1, 32, 32, generator=g) + 0.1  # sharp texture: blurring changes gradients
    valid = _mask(gt.shape, p=0.9)
    assert gradient_matching_loss(2.5 * gt + 1.0, gt, valid).item() == pytest.approx(0.0, abs=1e-5)
    blurred = F.avg_pool2d(gt, 5, stride=1, padding=2, count_include_pad=False)
    assert gradient_matching_loss(blurred, gt, valid).item() > 0.05


def test_gradients_flow_and_all_invalid_images_contribute_nothing() -> None:
    gt = _smooth(b=2)
    valid = _mask(gt.shape)
    valid[1] = False  # image 1 has no ground truth at all
    pred = _smooth(b=2, seed=4).requires_grad_(True)
    loss_fn = DepthLoss()
    batch = {"target": gt, "valid": valid, "space": torch.tensor([1, 1])}
    loss = loss_fn(pred, batch)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad[0].abs().sum() > 0 and pred.grad[1].abs().sum() == 0
    # the all-invalid image does not dilute the mean: same loss as image 0 alone
    alone = loss_fn(pred[:1].detach(), {"target": gt[:1], "valid": valid[:1], "space": 1})
    assert loss.item() == pytest.approx(alone.item(), rel=1e-5)
    # a batch without any valid pixel: exactly 0, no NaN, still differentiable
    pred2 = _smooth(b=2, seed=4).requires_grad_(True)
    zero = loss_fn(pred2, {"target": gt, "valid": torch.zeros_like(valid), "space": 1})
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(pred2.grad).all()
    for fn in (scale_shift_invariant_loss, gradient_matching_loss):
        assert fn(pred2.detach(), gt, torch.zeros_like(valid)).item() == 0.0


def test_silog_hand_value_and_zero_at_target() -> None:
    depth = _smooth() * 10
    valid = _mask(depth.shape)
    assert silog_loss(depth, depth, valid).item() == pytest.approx(0.0, abs=1e-5)
    # d = log 2 everywhere: sqrt(d^2 - 0.85 d^2) = log 2 * sqrt(0.15)
    assert silog_loss(2 * depth, depth, valid).item() == pytest.approx(math.log(2) * math.sqrt(0.15), rel=1e-4)
    assert silog_loss(2 * depth, depth, valid, lambd=1.0).item() == pytest.approx(0.0, abs=1e-3)


def test_depth_targets_are_converted_to_disparity() -> None:
    depth = _smooth() * 5 + 1  # metres
    valid = _mask(depth.shape)
    depth_with_holes = torch.where(valid, depth, torch.zeros_like(depth))
    disp, good = target_disparity(depth_with_holes, torch.ones_like(valid), torch.tensor([0, 0]))
    assert torch.equal(good, valid)  # zero depth is invalid
    assert torch.allclose(disp[good], 1 / depth[valid])
    pred = 0.5 / depth + 0.2  # an affine function of the true disparity
    loss = DepthLoss()(pred, {"target": depth_with_holes, "valid": valid, "space": torch.tensor([0, 0])})
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    # the same prediction judged against the depth *as if it were disparity* is clearly wrong
    assert DepthLoss()(pred, {"target": depth_with_holes, "valid": valid, "space": torch.tensor([1, 1])}).item() > 0.01
    # mixed batch: image 0 depth, image 1 disparity
    target = torch.cat([depth_with_holes[:1], (1 / depth[1:]) * valid[1:]])
    mixed = DepthLoss()(pred, {"target": target, "valid": valid, "space": [0, 1]})
    assert mixed.item() == pytest.approx(0.0, abs=1e-4)
