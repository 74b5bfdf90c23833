"""Segmentation losses: cross-entropy, class-balanced CE (alone or + Dice), Dice, CE+Dice, focal, CE+Lovász-softmax
(Dice/focal/Lovász from smp), top-k CE (the hardest share of pixels only: OHEM, as DeepLab's bootstrapped CE)
and top-k CE + Dice (OHEM for the pixels, Dice for the per-category balance)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visionlab.data.categories import IGNORE_INDEX

LOSSES = ("ce", "balanced_ce", "dice", "ce_dice", "balanced_ce_dice", "focal", "ce_lovasz", "topk_ce", "topk_ce_dice")
WEIGHTED_LOSSES = ("balanced_ce", "balanced_ce_dice")  # need class weights (balanced_weights of the train set)
TOPK_SHARE = 0.25  # top-k CE: the 25% of valid pixels with the highest loss in the batch


def balanced_weights(frequencies: np.ndarray, ignore: list[int] | None = None) -> torch.Tensor:
    """ENet weighting w_c = 1 / ln(1.02 + f_c): rare categories count more, bounded at ~50x."""
    f = np.asarray(frequencies, dtype=np.float64)
    f = f / max(f.sum(), 1e-12)
    w = 1.0 / np.log(1.02 + f)
    for i in ignore or []:
        w[i] = 0.0
    present = w[w > 0]
    return torch.tensor(w / present.mean() if present.size else w, dtype=torch.float32)


class SegmentationLoss(nn.Module):
    """``loss(logits, target)``; target holds category ids with IGNORE_INDEX for pixels to skip."""

    def __init__(self, kind: str = "ce", class_weights: torch.Tensor | None = None):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss '{kind}' is not one of {', '.join(LOSSES)}")
        if kind in WEIGHTED_LOSSES and class_weights is None:
            raise ValueError(f"loss '{kind}' needs class weights from the training set's pixel frequencies")
        self.kind = kind
        self.register_buffer("class_weights", class_weights if kind in WEIGHTED_LOSSES else None)
        if kind in ("dice", "ce_dice", "balanced_ce_dice", "topk_ce_dice"):
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice = DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX)
        if kind == "ce_lovasz":
            from segmentation_models_pytorch.losses import LovaszLoss

            self.lovasz = LovaszLoss(mode="multiclass", per_image=False, ignore_index=IGNORE_INDEX)
        if kind == "focal":
            from segmentation_models_pytorch.losses import FocalLoss

            self.focal = FocalLoss(mode="multiclass", ignore_index=IGNORE_INDEX, gamma=2.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if not (target != IGNORE_INDEX).any():  # all-ignored batch (e.g. a crop of void): contribute nothing
            return logits.sum() * 0.0
        if self.kind == "focal":
            return self.focal(logits, target)
        if self.kind == "dice":
            return self.dice(logits, target)
        if self.kind == "topk_ce":
            return topk_cross_entropy(logits, target, TOPK_SHARE)
        if self.kind == "topk_ce_dice":
            return topk_cross_entropy(logits, target, TOPK_SHARE) + self.dice(logits, target)
        ce = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE_INDEX)
        if self.kind == "ce_lovasz":
            return ce + self.lovasz(logits, target)
        return ce + self.dice(logits, target) if self.kind in ("ce_dice", "balanced_ce_dice") else ce


def topk_cross_entropy(logits: torch.Tensor, target: torch.Tensor, share: float) -> torch.Tensor:
    """Mean CE over the ``share`` of valid (non-ignored) pixels with the highest CE in the batch: easy pixels
    (most of the road and sky) stop counting, thin and rare ones count more."""
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none").flatten()
    valid = per_pixel[target.flatten() != IGNORE_INDEX]
    k = max(1, int(round(share * valid.numel())))
    return valid.topk(k, sorted=False).values.mean()
