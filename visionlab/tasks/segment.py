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

from visionlab.cfg import BaseConfig, ConfigError, as_size, probability, scale_range, scene_count, tta_scales
from visionlab.data.categories import (CATEGORY_COLOURS, CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES,
                                     VOID, colorize)
from visionlab.losses.segmentation import WEIGHTED_LOSSES, SegmentationLoss, balanced_weights
from visionlab.metrics.segmentation import SegmentationMetrics
from visionlab.models import segmentation as _models  # noqa: F401  (registers the architectures)
from visionlab.tasks.base import Metrics, Task, register_task, upsample


class SegmentConfig(BaseConfig):
    crop: tuple[int, int] | None
    synthetic_train: int
    synthetic_val: int
    hflip: float
    rare_crop: float
    rare_categories: tuple[str, ...]
    scale: tuple[float, float]
    colour_jitter: float
    blur_noise: float
    encoder: str | None
    loss: str
    ignore_void: bool
    tta_flip: bool
    tta_scales: tuple[float, ...]

    _crop = field_validator("crop", mode="before")(as_size)
    _scenes = field_validator("synthetic_train", "synthetic_val")(scene_count)
    _probability = field_validator("hflip", "blur_noise", "colour_jitter", "rare_crop")(probability)

    @field_validator("rare_categories", mode="before")
    @classmethod
    def _rare_categories(cls, v: Any) -> tuple[str, ...]:
        names = (v,) if isinstance(v, str) else tuple(v or ())
        unknown = [n for n in names if n not in CATEGORY_NAMES or n == CATEGORY_NAMES[VOID]]
        if unknown or not names:
            raise ValueError(f"rare_categories={list(names)}: expected categories among "
                             f"{', '.join(CATEGORY_NAMES[VOID + 1:])}")
        return names
    _scale = field_validator("scale")(scale_range)

    _tta_scales = field_validator("tta_scales", mode="before")(tta_scales)

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
    description = "Semantic segmentation into the 8 Cityscapes categories."
    config_cls = SegmentConfig
    fitness_key = "miou"
    fitness_mode = "max"
    summary_keys = ("miou", "pixel_acc")
    compare_keys = ("mdice",)
    compare_prefixes = ("iou/",)
    inherit_from_checkpoint = ("data", "imgsz", "synthetic_val")

    def eval_loss_applies(self, outputs: torch.Tensor, batch: dict[str, Any]) -> bool:
        # native-size labels (val) differ from the network size: the loss is then not comparable
        target = batch["target"]
        return isinstance(target, torch.Tensor) and target.shape[-2:] == outputs.shape[-2:]

    def inference_model(self, model: Any, cfg: SegmentConfig) -> Any:
        from visionlab.models.tta import with_tta

        return with_tta(model, cfg.tta_scales, cfg.tta_flip)

    def build_dataset(self, cfg: SegmentConfig, split: str, train: bool) -> Dataset:
        from visionlab.data.segmentation import SegmentationDataset

        return SegmentationDataset(cfg, split, train)

    def model_spec(self, cfg: SegmentConfig) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"num_classes": NUM_CATEGORIES}
        if cfg.crop and (cfg.crop[0] > cfg.imgsz[0] or cfg.crop[1] > cfg.imgsz[1]):
            raise ConfigError(f"crop={list(cfg.crop)} must fit inside imgsz={list(cfg.imgsz)}")
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
        if cfg.loss in WEIGHTED_LOSSES:
            weights = balanced_weights(train_set.category_frequencies(), ignore=[VOID] if cfg.ignore_void else [])
        return _LossOnBatch(SegmentationLoss(cfg.loss, weights))

    def new_metrics(self, cfg: SegmentConfig, device: torch.device, sync: bool = True) -> Metrics:
        return SegmentationMetrics(device, sync=sync)

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
                     device: torch.device, metrics: Metrics | None = None, n: int = 6) -> list[Path]:
        """Image | ground truth | prediction for ``n`` samples spread over ``dataset``."""
        from visionlab.data.transforms import resize_image
        from visionlab.plots import save_image_grid

        rows = []
        for i in sorted(set(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int).tolist())):
            sample = dataset[i]  # spread over the split: neighbouring video frames look alike
            image = sample["image"].permute(1, 2, 0).numpy()
            target = sample["target"].numpy()
            pred = self.infer(model, [image], tuple(image.shape[:2]), device, sizes=[target.shape])[0]
            shown = resize_image(image, target.shape)
            rows.append([shown, overlay(shown, target), overlay(shown, pred)])
        if not rows:
            return []
        return [save_image_grid(rows, ["image", "ground truth", "prediction"], save_dir / "predictions.png")]

    # ---- inference: logits -> category ids at the image's size ----

    def labels(self, meta: dict[str, Any]) -> list[str]:
        return list(CATEGORY_NAMES)

    def postprocess(self, output: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Logits CxHxW -> uint8 category ids at ``size`` (logits upsampled first, then argmax).

        One channel at a time with a running maximum: the same ids as ``upsample(output).argmax(0)`` (bilinear
        interpolation is per channel; ties keep the first channel, as argmax) in ~10 bytes per output pixel
        instead of ~70, which is what bounds the server's memory on a 40-megapixel upload."""
        if tuple(output.shape[-2:]) == tuple(size):
            return output.argmax(0).to(torch.uint8).cpu().numpy()
        best = upsample(output[:1], size)[0]
        ids = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
        for c in range(1, output.shape[0]):
            scores = upsample(output[c:c + 1], size)[0]
            better = scores > best
            ids[better] = c
            best = torch.where(better, scores, best)
        return ids.cpu().numpy()

    def write_prediction(self, result: np.ndarray, image: np.ndarray, name: str, save_dir: Path,
                         cfg: SegmentConfig) -> dict[str, Any]:
        from PIL import Image

        (save_dir / "masks").mkdir(parents=True, exist_ok=True)
        (save_dir / "overlays").mkdir(parents=True, exist_ok=True)
        Image.fromarray(result).save(save_dir / "masks" / f"{name}.png")
        Image.fromarray(overlay(image, result)).save(save_dir / "overlays" / f"{name}.jpg", quality=90)
        return {"pixel_counts": np.bincount(result.ravel(), minlength=NUM_CATEGORIES)[:NUM_CATEGORIES].tolist()}

    def summarize(self, records: list[dict[str, Any]], cfg: SegmentConfig) -> dict[str, Any]:
        if not records:
            return {}
        counts = np.sum([r["pixel_counts"] for r in records], axis=0)
        share = counts / max(counts.sum(), 1)
        return {"category_share": {n: round(float(s), 4) for n, s in zip(CATEGORY_NAMES, share)}}

    # ---- serving: PNG of category ids, or JSON pixel shares (+ colour pictures) ----

    response_formats = {"png": "image/png", "json": "application/json"}

    def encode_response(self, result: np.ndarray, image: np.ndarray, fmt: str, meta: dict[str, Any],
                        options: dict[str, Any]) -> tuple[bytes, str] | dict[str, Any]:
        """png: HxW uint8 category ids (0..7, see ``labels``); json: per-category pixel shares, plus the colour
        mask and overlay as base64 PNGs with ``overlay``."""
        from visionlab.tasks.base import png_base64, png_bytes

        if fmt == "png":
            return png_bytes(result), "image/png"
        counts = np.bincount(result.ravel(), minlength=NUM_CATEGORIES)[:NUM_CATEGORIES]
        shares = {n: round(float(c) / max(result.size, 1), 6) for n, c in zip(CATEGORY_NAMES, counts)}
        out: dict[str, Any] = {
            "height": int(result.shape[0]), "width": int(result.shape[1]), "categories": list(CATEGORY_NAMES),
            "shares": shares, "chart": {"title": "pixel share per category", "values": shares},
            "legend": {n: "#{:02x}{:02x}{:02x}".format(*c) for n, c in zip(CATEGORY_NAMES, CATEGORY_COLOURS.tolist())},
        }
        if options.get("overlay"):
            out["images"] = {"predicted mask": png_base64(colorize(result)), "overlay": png_base64(overlay(image, result))}
        return out

    def target_picture(self, sample: dict[str, Any]) -> np.ndarray:
        return colorize(np.asarray(sample["target"], dtype=np.uint8))

    def dataset_images(self, source: str) -> list[Path] | None:
        """camvid:DIR, cityscapes:DIR, folder:DIR, a dataset YAML or a folder in one of those layouts ->
        the images of its val split (else test, else train)."""
        from visionlab.data.io import DataError
        from visionlab.data.segmentation_layouts import list_pairs, parse_data_spec, scan_split

        path = Path(source)
        kind = source.partition(":")[0]
        layout_dir = path.is_dir() and ((path / "leftImg8bit").is_dir() or (path / "images").is_dir() and
                                        (path / "masks").is_dir())
        if not (kind in ("cityscapes", "camvid", "folder") or path.suffix in (".yaml", ".yml") or layout_dir):
            return None
        spec = parse_data_spec(source)
        for split in ("val", "test", "train"):
            try:
                found = split in spec.splits and bool(scan_split(spec, split).pairs)
            except DataError:
                found = False
            if found:
                return [image for image, _ in list_pairs(spec, split)]  # real problems in a split are raised
        raise DataError(f"source={source}: no val, test or train split with images found")

    def check_data(self, spec: str, out: Path | None, console: Any) -> int:
        from visionlab.data.segmentation_check import run_check

        return run_check(spec, out, console)


register_task(SegmentTask())
