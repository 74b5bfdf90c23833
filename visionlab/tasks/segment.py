"""Semantic segmentation of driving scenes into the 8 Cityscapes categories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn
from torch.utils.data import Dataset

from visionlab.cfg import BaseConfig, ConfigError
from visionlab.data.categories import CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES, VOID, colorize
from visionlab.losses.segmentation import SegmentationLoss, balanced_weights
from visionlab.metrics.segmentation import SegmentationMetrics
from visionlab.models import segmentation as _models  # noqa: F401  (registers the architectures)
from visionlab.tasks.base import Metrics, Task, register_task

class SegmentConfig(BaseConfig):
    synthetic_train: int
    synthetic_val: int
    hflip: float
    scale: tuple[float, float]
    colour_jitter: float
    blur_noise: float
    encoder: str | None
    loss: str
    ignore_void: bool

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        from visionlab.losses.segmentation import LOSSES

        if v not in LOSSES:
            raise ValueError(f"loss '{v}' is not one of {', '.join(LOSSES)}")
        return v


class _LossOnBatch(nn.Module):
    def __init__(self, loss: SegmentationLoss):
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss(outputs, batch["target"])


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image * (1 - alpha) + colorize(mask) * alpha).astype(np.uint8)


class SegmentTask(Task):
    name = "segment"
    config_cls = SegmentConfig
    fitness_key = "miou"

    def build_dataset(self, cfg: SegmentConfig, split: str, train: bool) -> Dataset:
        from visionlab.data.segmentation import SegmentationDataset

        return SegmentationDataset(cfg, split, train)

    def model_spec(self, cfg: SegmentConfig) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"num_classes": NUM_CATEGORIES}
        if cfg.model in ("fpn", "unet"):
            kwargs["encoder"] = cfg.encoder or "resnet18"
        elif cfg.encoder:
            raise ConfigError(f"encoder={cfg.encoder} only applies to the generic models fpn and unet, not {cfg.model}")
        return cfg.model, kwargs

    def load_pretrained(self, model: nn.Module, cfg: SegmentConfig) -> None:
        if cfg.pretrained:
            from visionlab.models.pretrained import load_encoder_weights

            load_encoder_weights(model, cfg.pretrained)

    def build_loss(self, cfg: SegmentConfig, train_set: Dataset) -> nn.Module:
        weights = None
        if cfg.loss == "balanced_ce":
            weights = balanced_weights(train_set.category_frequencies(), ignore=[VOID] if cfg.ignore_void else [])
        return _LossOnBatch(SegmentationLoss(cfg.loss, weights))

    def new_metrics(self, cfg: SegmentConfig, device: torch.device) -> Metrics:
        return SegmentationMetrics(device)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        targets = [s["target"] for s in samples]
        same = all(t.shape == targets[0].shape for t in targets)
        return {
            "image": torch.stack([s["image"] for s in samples]),
            "target": torch.stack(targets) if same else targets,  # native-size labels may differ in size
            "index": torch.tensor([s["index"] for s in samples]),
        }

    def preprocess(self, batch: dict[str, Any], device: torch.device, cfg: SegmentConfig) -> dict[str, Any]:
        def prep(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device, non_blocking=True).long()
            return torch.where(t == VOID, IGNORE_INDEX, t) if cfg.ignore_void else t

        target = batch["target"]
        return {
            "image": batch["image"].to(device, non_blocking=True).float(),  # models normalise inputs themselves
            "target": prep(target) if isinstance(target, torch.Tensor) else [prep(t) for t in target],
            "index": batch["index"],
        }

    @torch.no_grad()
    def save_visuals(self, model: nn.Module, dataset: Dataset, save_dir: Path, cfg: SegmentConfig,
                     device: torch.device, n: int = 6) -> list[Path]:
        """Image | ground truth | prediction for the first ``n`` samples of ``dataset``."""
        from visionlab.plots import save_image_grid

        model.eval()
        rows = []
        for i in range(min(n, len(dataset))):
            sample = dataset[i]
            image = sample["image"].permute(1, 2, 0).numpy()
            target = sample["target"].numpy()
            pred = predict_mask(model, image, device, target.shape)
            shown = _resize_for_display(image, target.shape)
            rows.append([shown, overlay(shown, target), overlay(shown, pred)])
        if not rows:
            return []
        return [save_image_grid(rows, ["image", "ground truth", "prediction"], save_dir / "predictions.png")]

    @torch.no_grad()
    def predict(self, model: nn.Module, meta: dict[str, Any], cfg: SegmentConfig, save_dir: Path,
                device: torch.device) -> dict[str, Any]:
        from PIL import Image

        from visionlab.data.io import DataError, read_image
        from visionlab.data.segmentation import resize_image
        from visionlab.engine.sources import list_sources
        from visionlab.utils.progress import console, track

        model.eval()
        (save_dir / "masks").mkdir(parents=True, exist_ok=True)
        (save_dir / "overlays").mkdir(parents=True, exist_ok=True)
        done, skipped = 0, []
        paths = list_sources(cfg.source)
        counts = np.zeros(NUM_CATEGORIES, dtype=np.int64)
        for path in track(paths, total=len(paths), description="predict"):
            try:
                image = read_image(path)
            except DataError as e:
                skipped.append(str(e))
                console.print(f"[yellow]skipped[/] {e}")
                continue
            mask = predict_mask(model, resize_image(image, tuple(cfg.imgsz)), device, image.shape[:2])
            Image.fromarray(mask).save(save_dir / "masks" / f"{path.stem}.png")
            Image.fromarray(overlay(image, mask)).save(save_dir / "overlays" / f"{path.stem}.jpg", quality=90)
            counts += np.bincount(mask.ravel(), minlength=NUM_CATEGORIES)[:NUM_CATEGORIES]
            done += 1
        share = counts / max(counts.sum(), 1)
        return {"images": done, "skipped": skipped, "save_dir": str(save_dir),
                "category_share": {n: round(float(s), 4) for n, s in zip(CATEGORY_NAMES, share)}}


def _resize_for_display(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from visionlab.data.segmentation import resize_image

    return resize_image(image, size)


def predict_mask(model: nn.Module, image: np.ndarray, device: torch.device, out_size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 at network size -> category ids at ``out_size`` (logits upsampled, then argmax)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device).float()
    logits = model(x)
    if logits.shape[-2:] != tuple(out_size):
        logits = F.interpolate(logits.float(), size=tuple(out_size), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


register_task(SegmentTask())
