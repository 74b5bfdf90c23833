"""Depth losses, hand-written, for models that output relative inverse depth (disparity) Bx1xHxW.

- ``scale_shift_invariant_loss``: per image, the least-squares scale s and shift t aligning the prediction
  to the target disparity (closed-form 2x2 normal equations, masked, vectorised over the batch), then the
  mean absolute residual, optionally trimmed (Depth Anything drops the 10% largest residuals). A
  ``align="median"`` variant normalises both maps by median / mean absolute deviation (MiDaS, DAv2).
- ``gradient_matching_loss``: MiDaS multi-scale gradient matching on the aligned residual.
- ``silog_loss``: scale-invariant log loss (Eigen et al., BTS) for metric depth.
- ``DepthLoss``: the weighted sum used by the depth task, ``loss(outputs, batch)``.

Every loss reads only pixels where ``valid`` is True, averages per image, then over the images that have
at least one valid pixel; an all-invalid batch returns a zero that still has a gradient path (no NaN).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-8
LOSS_ALIGN_MODES = ("median", "lsq")  # how the losses compare a prediction with its target (aligned_residual)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """Bx1xHxW (or BxHxW) -> BxN."""
    return x.reshape(x.shape[0], -1)


def _per_image_mean(per_image: torch.Tensor, has_pixels: torch.Tensor) -> torch.Tensor:
    """Average of per-image losses over images with valid pixels; 0 (with gradient path) if none."""
    per_image = torch.where(has_pixels, per_image, torch.zeros_like(per_image))
    return per_image.sum() / has_pixels.sum().clamp(min=1)


def fit_scale_shift(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least squares ``min_{s,t} sum_valid (s * pred + t - target)^2``; returns (s, t), each shape B.

    Solves the 2x2 normal equations [[Σp², Σp], [Σp, n]] [s, t] = [Σpt, Σt] for the whole batch at once.
    A degenerate image (constant prediction, or fewer than 2 valid pixels) gets s = 0 and t = mean target,
    the least-squares constant; an image without valid pixels gets s = t = 0.
    """
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32  # metrics solve in float64
    p, t, m = _flat(pred).to(dtype), _flat(target).to(dtype), _flat(valid).to(dtype)
    n = m.sum(1)
    # The normal equations solved in centred form (s = cov(p, t) / var(p), t = mean t - s mean p): the same
    # solution, but float32 keeps its precision when the prediction has a large offset.
    p_mean = (m * p).sum(1) / n.clamp(min=1)
    t_mean = (m * t).sum(1) / n.clamp(min=1)
    pc = (p - p_mean[:, None]) * m
    var = (pc * pc).sum(1)
    cov = (pc * (t - t_mean[:, None])).sum(1)
    ok = var > 1e-10 * (m * p * p).sum(1).clamp(min=_EPS)  # relative: independent of the prediction's units
    scale = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
    shift = t_mean - scale * p_mean
    return scale, shift


def _median_normalise(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(x - median) / mean|x - median| per image over valid pixels (MiDaS' robust normalisation), BxN."""
    x = _flat(x).float()
    m = _flat(valid)
    med = torch.nanmedian(torch.where(m, x, torch.full_like(x, float("nan"))), dim=1, keepdim=True).values
    med = torch.nan_to_num(med)  # images without valid pixels
    mad = ((x - med).abs() * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    return (x - med) / mad.clamp(min=_EPS)


def aligned_residual(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, align: str = "lsq") -> torch.Tensor:
    """Residual BxN between the aligned prediction and the target (``lsq``) or between both normalised maps
    (``median``). Invalid pixels hold arbitrary values: always combine with ``valid``."""
    if align == "lsq":
        s, t = fit_scale_shift(pred, target, valid)
        return s[:, None] * _flat(pred).float() + t[:, None] - _flat(target).float()
    if align == "median":
        return _median_normalise(pred, valid) - _median_normalise(target, valid)
    raise ValueError(f"align '{align}' is not one of lsq, median")


def scale_shift_invariant_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, trim: float = 0.0, align: str = "lsq"
) -> torch.Tensor:
    """Mean absolute residual after per-image scale+shift alignment, on valid pixels.

    ``trim`` in [0, 1): per image, the ``floor(trim * n_valid)`` largest residuals are dropped (outliers
    and label noise; Depth Anything uses 0.1). Per-image means are averaged over images with valid pixels.
    """
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim={trim} invalid; expected 0 <= trim < 1")
    m = _flat(valid).bool()
    res = aligned_residual(pred, target, valid, align).abs()
    n = m.sum(1)
    if trim > 0:
        # invalid residuals sort last (+inf); keep the n - floor(trim * n) smallest valid ones
        res = torch.where(m, res, torch.full_like(res, float("inf"))).sort(dim=1).values
        keep = n - torch.floor(n.double() * trim + 1e-9).long()
        m = torch.arange(res.shape[1], device=res.device)[None, :] < keep[:, None]
        n = keep
    per_image = torch.where(m, res, torch.zeros_like(res)).sum(1) / n.clamp(min=1)
    return _per_image_mean(per_image, n > 0)


def gradient_matching_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, scales: int = 4, align: str = "lsq"
) -> torch.Tensor:
    """MiDaS multi-scale gradient matching: at strides 1, 2, 4, ... (``scales`` levels) the mean absolute
    x- and y-differences of the aligned residual, counted where both neighbours are valid; summed over
    levels. Zero when the prediction is any scale+shift of the target; it penalises blur and edge errors."""
    b, h, w = pred.shape[0], pred.shape[-2], pred.shape[-1]
    res = aligned_residual(pred, target, valid, align).reshape(b, h, w)
    mask = valid.reshape(b, h, w).bool()
    total = res.sum() * 0.0
    for k in range(scales):
        step = 2**k
        r, m = res[:, ::step, ::step], mask[:, ::step, ::step]
        if r.shape[-1] < 2 and r.shape[-2] < 2:
            break
        r = torch.where(m, r, torch.zeros_like(r))
        mx = m[:, :, 1:] & m[:, :, :-1]
        my = m[:, 1:, :] & m[:, :-1, :]
        gx = ((r[:, :, 1:] - r[:, :, :-1]).abs() * mx).flatten(1).sum(1)
        gy = ((r[:, 1:, :] - r[:, :-1, :]).abs() * my).flatten(1).sum(1)
        n = m.flatten(1).sum(1)  # MiDaS normalises by the valid pixel count of the level
        total = total + _per_image_mean((gx + gy) / n.clamp(min=1), n > 0)
    return total


def silog_loss(
    pred_depth: torch.Tensor, target_depth: torch.Tensor, valid: torch.Tensor, lambd: float = 0.85
) -> torch.Tensor:
    """Scale-invariant log loss ``sqrt(mean(d²) - λ mean(d)²)``, d = log pred - log target, per image over
    valid pixels, then averaged over images (no x10 factor). Predictions are clamped to >= 1e-6 first."""
    m = _flat(valid).bool() & (_flat(target_depth) > 0)
    log_pred = torch.log(_flat(pred_depth).float().clamp(min=1e-6))
    d = log_pred - torch.log(_flat(target_depth).float().clamp(min=1e-6))
    d = torch.where(m, d, torch.zeros_like(d))
    n = m.sum(1)
    mean_d = d.sum(1) / n.clamp(min=1)
    mean_d2 = (d * d).sum(1) / n.clamp(min=1)
    # clamp: rounding can make the variance term slightly negative; sqrt(0) gradient guarded by the floor
    per_image = torch.sqrt((mean_d2 - lambd * mean_d * mean_d).clamp(min=1e-12))
    return _per_image_mean(per_image, n > 0)


def target_disparity(target: torch.Tensor, valid: torch.Tensor, space: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (B x 1 x H x W, depth when space=0 or disparity when space=1) -> (disparity, valid).

    Depth becomes 1/depth; pixels with non-positive or non-finite depth become invalid (disparity 0).
    ``space`` may be an int, a list of ints or a tensor of shape B."""
    b = target.shape[0]
    space_t = torch.as_tensor(space, device=target.device).reshape(-1).expand(b)  # int, list or tensor
    is_depth = (space_t == 0).reshape(b, *([1] * (target.dim() - 1)))
    target = target.float()
    good = valid.bool() & torch.isfinite(target) & torch.where(is_depth, target > 0, target >= 0)
    disp = torch.where(is_depth, 1.0 / torch.where(good, target, torch.ones_like(target)), target)
    return torch.where(good, disp, torch.zeros_like(disp)), good


class DepthLoss(nn.Module):
    """``loss(outputs Bx1xHxW disparity, batch)`` = ssi_weight * SSI + gm_weight * gradient matching
    (+ silog_weight * SILog on 1/outputs vs. depth, for metric models).

    ``batch`` needs "target" (Bx1xHxW), "valid" (Bx1xHxW bool) and "space" (0 depth, 1 disparity).
    Outputs are resized (bilinear) to the target size if they differ. The components of the last call are
    in ``self.last`` (floats) for logging."""

    def __init__(
        self,
        ssi_weight: float = 1.0,
        gm_weight: float = 2.0,
        trim: float = 0.1,
        scales: int = 4,
        align: str = "lsq",
        silog_weight: float = 0.0,
        lambd: float = 0.85,
    ):
        super().__init__()
        if align not in LOSS_ALIGN_MODES:
            raise ValueError(f"align '{align}' is not one of {', '.join(LOSS_ALIGN_MODES)}")
        self.ssi_weight, self.gm_weight, self.silog_weight = ssi_weight, gm_weight, silog_weight
        self.trim, self.scales, self.align, self.lambd = trim, scales, align, lambd
        self.last: dict[str, float] = {}

    def forward(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        target, valid = batch["target"], batch["valid"]
        if isinstance(target, (list, tuple)):
            if len({tuple(t.shape) for t in target}) != 1:
                raise ValueError("DepthLoss needs targets of one size (training samples are at network size)")
            target, valid = torch.stack(list(target)), torch.stack(list(valid))
        outputs = outputs.float()
        if outputs.shape[-2:] != target.shape[-2:]:
            outputs = F.interpolate(outputs, size=target.shape[-2:], mode="bilinear", align_corners=False)
        disp, good = target_disparity(target.to(outputs.device), valid.to(outputs.device), batch["space"])
        total = outputs.sum() * 0.0
        if self.ssi_weight:
            ssi = scale_shift_invariant_loss(outputs, disp, good, self.trim, self.align)
            total = total + self.ssi_weight * ssi
            self.last["ssi"] = float(ssi.detach())
        if self.gm_weight:
            gm = gradient_matching_loss(outputs, disp, good, self.scales, self.align)
            total = total + self.gm_weight * gm
            self.last["gm"] = float(gm.detach())
        if self.silog_weight:
            depth = torch.where(good, 1.0 / disp.clamp(min=1e-6), torch.zeros_like(disp))
            sl = silog_loss(1.0 / outputs.clamp(min=1e-6), depth, good, self.lambd)
            total = total + self.silog_weight * sl
            self.last["silog"] = float(sl.detach())
        return total
