"""Segmentation metrics from one accumulated confusion matrix (torchmetrics, so DDP ranks are reduced).

IoU_c = TP / (TP + FP + FN), Dice_c = 2TP / (2TP + FP + FN), pixel accuracy = trace / total. Void pixels
of the ground truth are never scored (they count in neither IoU nor pixel accuracy).
mIoU averages the non-void categories that occur in the ground truth or the predictions; a category
absent from both has no IoU (NaN) rather than a free 0 or 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassConfusionMatrix

from visionlab.data.categories import CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES, VOID
from visionlab.metrics.base import Metrics


def scores_from_confusion(cm: np.ndarray, names: tuple[str, ...] = CATEGORY_NAMES) -> dict[str, float]:
    """cm[true, pred] counts -> {'miou', 'pixel_acc', 'mdice', 'iou/<name>', 'dice/<name>'}."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    keep = [i for i in range(len(names)) if i != VOID]
    total = cm.sum()
    out: dict[str, float] = {
        "miou": float(np.nanmean(iou[keep])) if not np.all(np.isnan(iou[keep])) else float("nan"),
        "mdice": float(np.nanmean(dice[keep])) if not np.all(np.isnan(dice[keep])) else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
    }
    for i in keep:
        out[f"iou/{names[i]}"] = float(iou[i])
        out[f"dice/{names[i]}"] = float(dice[i])
    return out


class SegmentationMetrics(Metrics):
    def __init__(self, device: torch.device, num_classes: int = NUM_CATEGORIES, sync: bool = True):
        self.cm = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, validate_args=False,
                                            sync_on_compute=sync).to(device)
        self.last: dict[str, float] = {}
        self.last_cm: np.ndarray | None = None

    def update(self, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        for logits, target in _per_sample(outputs, batch["target"]):
            # void is never scored, whatever the training loss did with it (Cityscapes convention)
            target = torch.where(target == VOID, IGNORE_INDEX, target)
            self.cm.update(logits.argmax(1).flatten(), target.flatten())

    def compute(self) -> dict[str, float]:
        self.last_cm = self.cm.compute().cpu().numpy()
        self.last = scores_from_confusion(self.last_cm)
        return self.last

    def report(self, console: Any) -> None:
        from rich.table import Table

        table = Table(title="per-category scores")
        for col in ("category", "IoU", "Dice/F1", "pixels (GT)"):
            table.add_column(col, justify="right" if col != "category" else "left")
        gt = self.last_cm.sum(1) if self.last_cm is not None else np.zeros(NUM_CATEGORIES)
        for i, name in enumerate(CATEGORY_NAMES):
            if i == VOID:
                continue
            table.add_row(name, f"{self.last[f'iou/{name}']:.4f}", f"{self.last[f'dice/{name}']:.4f}", f"{int(gt[i]):,}")
        console.print(table)
        console.print(
            f"mIoU (7 categories) [bold]{self.last['miou']:.4f}[/]  pixel acc {self.last['pixel_acc']:.4f}  "
            f"mDice {self.last['mdice']:.4f}"
        )

    def save_plots(self, save_dir: Path) -> list[Path]:
        if self.last_cm is None:
            return []
        from visionlab.plots import plot_confusion_matrix

        return [plot_confusion_matrix(self.last_cm, CATEGORY_NAMES, save_dir / "confusion_matrix.png")]


def _per_sample(outputs: torch.Tensor, targets: torch.Tensor | list[torch.Tensor]):
    """Yield (logits 1xCxHxW, target HxW) pairs, upsampling logits to the label's native size."""
    if isinstance(targets, torch.Tensor) and targets.shape[-2:] == outputs.shape[-2:]:
        yield outputs, targets
        return
    for i, target in enumerate(targets):
        logits = outputs[i : i + 1]
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        yield logits, target
