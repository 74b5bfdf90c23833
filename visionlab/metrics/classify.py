"""Classification metrics from one accumulated confusion matrix plus a top-5 counter (torchmetrics, so DDP
ranks are reduced at compute()).

accuracy = trace / total; per-class accuracy (recall) = cm[c, c] / cm[c].sum(); mean_class_acc averages the
classes present in the ground truth; top5 = share of images whose class is among the 5 largest logits
(only when there are more than 5 classes).

Flip test-time augmentation arrives as a doubled batch (the task's ``preprocess`` stacks the flipped
images after the originals); ``fold_tta`` averages the two halves' logits before anything is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from visionlab.metrics.base import Metrics

PER_CLASS_KEYS_UP_TO = 20  # more classes (CIFAR-100): per-class accuracy only in the report, not per epoch


def fold_tta(outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """2B x C logits of [images, flipped images] -> B x C mean logits; unchanged without TTA."""
    if batch.get("tta") and len(outputs) == 2 * len(batch["target"]):
        half = len(outputs) // 2
        return (outputs[:half] + outputs[half:]) / 2
    return outputs


def scores_from_confusion(cm: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """cm[true, pred] counts -> {'accuracy', 'mean_class_acc', 'acc/<name>' (up to 20 classes)}."""
    cm = cm.astype(np.float64)
    total, per_class_n = cm.sum(), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(per_class_n > 0, np.diag(cm) / per_class_n, np.nan)
    out = {"accuracy": float(np.trace(cm) / total) if total else float("nan"),
           "mean_class_acc": float(np.nanmean(recall)) if (per_class_n > 0).any() else float("nan")}
    if len(names) <= PER_CLASS_KEYS_UP_TO:
        out.update({f"acc/{n}": float(r) for n, r in zip(names, recall)})
    return out


class ClassifyMetrics(Metrics):
    def __init__(self, class_names: Sequence[str], device: torch.device | str = "cpu", sync: bool = True):
        self.names = list(class_names)
        n = len(self.names)
        self.cm = MulticlassConfusionMatrix(n, validate_args=False, sync_on_compute=sync).to(device)
        self.top5 = (MulticlassAccuracy(n, top_k=5, average="micro", validate_args=False, sync_on_compute=sync)
                     .to(device) if n > 5 else None)
        self.last: dict[str, float] = {}
        self.last_cm: np.ndarray | None = None

    def update(self, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        logits, target = fold_tta(outputs, batch), batch["target"]
        self.cm.update(logits.argmax(1), target)
        if self.top5 is not None:
            self.top5.update(logits, target)

    def compute(self) -> dict[str, float]:
        self.last_cm = self.cm.compute().cpu().numpy()
        self.last = scores_from_confusion(self.last_cm, self.names)
        if self.top5 is not None:
            self.last["top5"] = float(self.top5.compute())
        return self.last

    def report(self, console: Any) -> None:
        from rich.table import Table

        if self.last_cm is None:
            return
        table = Table(title="per-class accuracy")
        for col in ("class", "accuracy", "images", "most confused with"):
            table.add_column(col, justify="left" if col in ("class", "most confused with") else "right")
        cm = self.last_cm
        off = cm - np.diag(np.diag(cm))
        for i, name in enumerate(self.names):
            n = int(cm[i].sum())
            acc = cm[i, i] / n if n else float("nan")
            worst = int(off[i].argmax())
            confused = f"{self.names[worst]} ({int(off[i, worst])})" if off[i, worst] > 0 else ""
            table.add_row(name, f"{acc:.4f}", f"{n:,}", confused)
        console.print(table)
        top5 = f"  top-5 {self.last['top5']:.4f}" if "top5" in self.last else ""
        console.print(f"accuracy [bold]{self.last['accuracy']:.4f}[/]{top5}  mean class accuracy "
                      f"{self.last['mean_class_acc']:.4f}  ({int(cm.sum()):,} images)")

    def save_plots(self, save_dir: Path) -> list[Path]:
        if self.last_cm is None:
            return []
        from visionlab.plots import plot_confusion_matrix

        return [plot_confusion_matrix(self.last_cm, self.names, save_dir / "confusion_matrix.png", unit="images")]
