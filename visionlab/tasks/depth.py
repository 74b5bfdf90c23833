"""Monocular relative depth, the Depth Anything V2 recipe: models output inverse depth (disparity) up to
scale and shift, trained with scale-and-shift-invariant + gradient-matching losses, evaluated after
per-image alignment (AbsRel, delta1 ... with bootstrap CIs, per source).

Extra modes (``visionlab depth pseudo-label`` / ``features``) and the data check live in
``visionlab/tasks/depth_modes.py``; this file is the ``Task`` interface itself.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationInfo, field_validator
from torch import nn
from torch.utils.data import Dataset

from visionlab.cfg import BaseConfig, ConfigError, as_size, one_of, probability, scale_range, scene_count, tta_scales
from visionlab.losses.depth import LOSS_ALIGN_MODES, DepthLoss
from visionlab.metrics.depth import ALIGN_MODES, DepthMetrics
from visionlab.models import depth_cnn as _cnn  # noqa: F401  (registers the CNN depth models)
from visionlab.models import dpt as _dpt  # noqa: F401  (registers dpt_vits/vitb/vitl)
from visionlab.models.registry import get_builder
from visionlab.tasks.base import Metrics, Task, register_task, upsample

COLORMAPS = {"spectral": "Spectral_r", "turbo": "turbo", "viridis": "viridis"}  # Spectral_r: near = red (DAv2)
RAW_FORMATS = ("png16", "npy", "both")
PSEUDO_FORMATS = ("png16", "npy")
OFFICIAL_IMGSZ = 518  # Depth Anything V2's inference size


class DepthConfig(BaseConfig):
    crop: tuple[int, int] | None
    synthetic_train: int
    synthetic_val: int
    synthetic_rooms: float
    synthetic_textures: tuple[str, ...] | None
    hflip: float
    scale: tuple[float, float]
    colour_jitter: float
    blur_noise: float
    depth_scale: float | None
    min_depth: float | None
    max_depth: float | None
    eval_crop: str | None
    align: str
    loss_align: str
    encoder: str | None
    decoder_width: int | None
    ssi_weight: float
    gm_weight: float
    trim: float
    silog_weight: float
    distill_weight: float
    colormap: str
    save_raw: str
    pseudo_format: str
    tta_flip: bool
    tta_scales: tuple[float, ...]

    _crop = field_validator("crop", mode="before")(as_size)
    _tta_scales = field_validator("tta_scales", mode="before")(tta_scales)
    _scenes = field_validator("synthetic_train", "synthetic_val")(scene_count)
    _probability = field_validator("hflip", "colour_jitter", "blur_noise", "synthetic_rooms")(probability)
    _scale = field_validator("scale")(scale_range)

    @field_validator("synthetic_textures", mode="before")
    @classmethod
    def _folders(cls, v: Any) -> Any:
        return (str(v),) if isinstance(v, (str, Path)) else v  # one folder or a list of them

    @field_validator("depth_scale", "min_depth", "max_depth")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("must be a positive number (or null for the dataset's default)")
        return v

    @field_validator("max_depth")
    @classmethod
    def _depth_range(cls, v: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min_depth")
        if v is not None and low is not None and v <= low:
            raise ValueError(f"max_depth must be above min_depth ({low} m): no depth could be scored")
        return v

    @field_validator("ssi_weight", "gm_weight", "silog_weight", "distill_weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        if v < 0:
            raise ValueError("loss weights must be >= 0")
        return v

    @field_validator("trim")
    @classmethod
    def _trim(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("trim is the share of residuals dropped, in [0, 1), e.g. 0.1")
        return v

    @field_validator("decoder_width")
    @classmethod
    def _decoder_width(cls, v: int | None) -> int | None:
        if v is not None and not 8 <= v <= 1024:
            raise ValueError("decoder_width is the CNN decoder's channel count, 8..1024 (null = the model's 64)")
        return v

    @field_validator("eval_crop")
    @classmethod
    def _eval_crop(cls, v: str | None) -> str | None:
        if v not in (None, "none", "eigen", "garg"):
            raise ValueError("eval_crop must be none, eigen, garg or null (the dataset's default)")
        return v

    _align = field_validator("align")(one_of("align", ALIGN_MODES))
    _loss_align = field_validator("loss_align")(one_of("loss_align", LOSS_ALIGN_MODES))
    _colormap = field_validator("colormap")(one_of("colormap", COLORMAPS))
    _save_raw = field_validator("save_raw")(one_of("save_raw", RAW_FORMATS))
    _pseudo_format = field_validator("pseudo_format")(one_of("pseudo_format", PSEUDO_FORMATS))


class _LossOnBatch(nn.Module):
    """DepthLoss on the batch's labels, plus (with ``teacher=``) the same loss against the frozen
    teacher's disparity: online distillation, every pixel valid."""

    def __init__(self, loss: DepthLoss, distill_weight: float):
        super().__init__()
        self.loss, self.distill_weight = loss, distill_weight

    def forward(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        total = self.loss(outputs, batch)
        teacher = batch.get("teacher")
        if teacher is not None and self.distill_weight:
            soft = {"target": teacher.detach().float(), "valid": torch.ones_like(teacher, dtype=torch.bool),
                    "space": 1}
            total = total + self.distill_weight * self.loss(outputs, soft)
        return total


def colorize_disparity(disparity: np.ndarray, colormap: str = "spectral",
                       valid: np.ndarray | None = None) -> np.ndarray:
    """HxW disparity -> HxWx3 uint8, min..max of the valid pixels over the colormap (invalid = black)."""
    from matplotlib import colormaps

    lut = (colormaps[COLORMAPS[colormap]](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    d = np.asarray(disparity, dtype=np.float32)
    valid = np.isfinite(d) if valid is None else valid & np.isfinite(d)
    if not valid.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo, hi = float(d[valid].min()), float(d[valid].max())
    idx = np.clip((d - lo) / max(hi - lo, 1e-12) * 255, 0, 255)
    out = lut[np.nan_to_num(idx).astype(np.uint8)]
    out[~valid] = 0
    return out


def quantize_disparity(disparity: np.ndarray) -> tuple[np.ndarray, float]:
    """(uint16 values, scale) with disparity ~= values * scale and the image's max at 65535 (0 stays 0)."""
    d = np.clip(np.nan_to_num(np.asarray(disparity, dtype=np.float64)), 0, None)
    scale = float(d.max()) / 65535.0 if d.size else 0.0
    values = np.round(d / scale).astype(np.uint16) if scale > 0 else np.zeros(d.shape, np.uint16)
    return values, scale


def save_disparity_png16(path: Path, disparity: np.ndarray) -> float:
    """uint16 PNG of ``quantize_disparity``; the scale is also kept in the PNG's ``disparity_scale`` text
    chunk, so the file alone round-trips (``read_disparity_png16``). Written atomically."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from visionlab.utils.files import atomic_write

    values, scale = quantize_disparity(disparity)
    info = PngInfo()
    info.add_text("disparity_scale", repr(scale))
    atomic_write(path, lambda tmp: Image.fromarray(values).save(tmp, format="PNG", pnginfo=info))
    return scale


def read_disparity_png16(path: str | Path) -> np.ndarray:
    """float32 HxW disparity of a PNG written by ``save_disparity_png16``."""
    from PIL import Image

    from visionlab.data.io import DataError

    try:
        with Image.open(path) as img:
            img.load()
            scale = img.text.get("disparity_scale") if hasattr(img, "text") else None
            values = np.asarray(img)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable disparity PNG ({e})", "corrupt") from None
    if scale is None or values.ndim != 2:
        raise DataError(f"{path}: not a visionlab disparity PNG (16-bit, 'disparity_scale' text chunk)", "bad_label")
    return (values.astype(np.float64) * float(scale)).astype(np.float32)


class DepthTask(Task):
    name = "depth"
    description = "Monocular relative depth (Depth Anything V2 recipe): train, evaluate, pseudo-label."
    config_cls = DepthConfig
    fitness_key = "absrel"
    fitness_mode = "min"
    summary_keys = ("absrel", "delta1")
    compare_keys = ("absrel_ci_low", "absrel_ci_high", "delta1_ci_low", "delta1_ci_high", "rmse", "delta2", "images")
    # the evaluation protocol travels with the checkpoint: val uses what the model was trained and judged on
    inherit_from_checkpoint = ("data", "imgsz", "synthetic_val", "synthetic_rooms", "synthetic_textures", "depth_scale",
                               "min_depth", "max_depth", "eval_crop", "align", "keep_aspect")

    # ------------------------------------------------------------------ training and evaluation

    def compare_shows(self, key: str) -> bool:
        # per-source breakdowns are named after the user's sources: "<source>/absrel", "<source>/delta1"
        return super().compare_shows(key) or key.endswith(("/absrel", "/delta1"))

    def build_dataset(self, cfg: DepthConfig, split: str, train: bool) -> Dataset:
        from visionlab.data.depth import DepthDataset

        return DepthDataset(cfg, split, train)

    def model_spec(self, cfg: DepthConfig) -> tuple[str, dict[str, Any]]:
        if cfg.crop and (cfg.crop[0] > cfg.imgsz[0] or cfg.crop[1] > cfg.imgsz[1]):
            raise ConfigError(f"crop={list(cfg.crop)} must fit inside imgsz={list(cfg.imgsz)}")
        kwargs: dict[str, Any] = {}
        if cfg.decoder_width is not None:
            if "width" not in inspect.signature(get_builder(cfg.model)).parameters:
                raise ConfigError(f"decoder_width={cfg.decoder_width} applies to the CNN depth models "
                                  f"(depth_cnn, depth_efficientnet_lite*), not {cfg.model}")
            kwargs["width"] = cfg.decoder_width
        if cfg.model == "depth_cnn":
            return cfg.model, {"encoder": cfg.encoder or "resnet18", **kwargs}
        if cfg.encoder:
            raise ConfigError(f"encoder={cfg.encoder} only applies to the generic model depth_cnn, not {cfg.model}")
        return cfg.model, kwargs

    def load_pretrained(self, model: nn.Module, cfg: DepthConfig) -> None:
        if not cfg.pretrained:
            return
        from visionlab.models.dpt import DPTDepth

        if isinstance(model, DPTDepth):  # a DINOv2 / timm ViT-14 backbone file (or a whole DAv2 checkpoint)
            if cfg.pretrained == "imagenet":
                raise ConfigError(f"pretrained=imagenet: no offline ImageNet weights for {cfg.model}; pass a local "
                                  "DINOv2 checkpoint (e.g. dinov2_vits14_pretrain.pth)")
            from visionlab.models.depth_weights import load_encoder_into

            load_encoder_into(model, cfg.pretrained)
        else:
            from visionlab.models.pretrained import load_encoder_weights

            load_encoder_weights(model, cfg.pretrained)

    def load_foreign_checkpoint(self, path: Path) -> tuple[nn.Module, dict[str, Any]] | None:
        """An official Depth-Anything-V2 ``.pth`` / ``.safetensors``: encoder size from the tensor shapes,
        strict load (a wrong file is a one-line CheckpointError naming missing / unexpected keys)."""
        from visionlab.models.depth_weights import load_depth_checkpoint_file

        model, info = load_depth_checkpoint_file(path)
        size = [OFFICIAL_IMGSZ, OFFICIAL_IMGSZ]
        # config: val/predict inherit 518 (a multiple of 14) instead of the CNN default size, and predict /
        # pseudo-label keep the aspect ratio (shorter side 518), as the official infer_image does
        config = {"imgsz": size, "keep_aspect": True}
        return model, {"arch": info["model"], "arch_kwargs": {}, "imgsz": size, "config": config,
                       "source": "official Depth-Anything-V2 checkpoint"}

    def build_loss(self, cfg: DepthConfig, train_set: Dataset) -> nn.Module:
        loss = DepthLoss(ssi_weight=cfg.ssi_weight, gm_weight=cfg.gm_weight, trim=cfg.trim,
                         align=cfg.loss_align, silog_weight=cfg.silog_weight)
        return _LossOnBatch(loss, cfg.distill_weight)

    def new_metrics(self, cfg: DepthConfig, device: torch.device, sync: bool = True) -> Metrics:
        return DepthMetrics(device, align=cfg.align, sync=sync)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from visionlab.data.depth import collate

        return collate(samples)

    def preprocess(self, batch: dict[str, Any], device: torch.device, cfg: DepthConfig) -> dict[str, Any]:
        def move(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                return t.to(device, non_blocking=True)
            return [move(x) for x in t] if isinstance(t, list) else t

        out = dict(batch)  # space, source, min/max depth, index ride along for the loss and the metrics
        out["image"] = batch["image"].to(device, non_blocking=True).float()  # models normalise inputs themselves
        out["target"], out["valid"] = move(batch["target"]), move(batch["valid"])
        return out

    def eval_loss_applies(self, outputs: torch.Tensor, batch: dict[str, Any]) -> bool:
        # native-size evaluation targets of different sizes cannot be batched into the loss
        return isinstance(batch["target"], torch.Tensor)

    def save_visuals(self, model: nn.Module, dataset: Dataset, save_dir: Path, cfg: DepthConfig,
                     device: torch.device, metrics: Metrics | None = None, n: int = 4) -> list[Path]:
        """``best_worst.png``: image | ground truth | prediction | AbsRel error for the ``n`` best and worst
        images by AbsRel."""
        from visionlab.tasks.depth_modes import best_worst_grid

        path = best_worst_grid(self, model, dataset, cfg, device, save_dir / "best_worst.png", n, metrics)
        return [path] if path else []

    # ------------------------------------------------------------------ inference

    def inference_model(self, model: Any, cfg: DepthConfig) -> Any:
        from visionlab.models.tta import with_tta

        # disparities (relative, >= 0) of the mirrored / rescaled views averaged as values, not as probabilities
        return with_tta(model, cfg.tta_scales, cfg.tta_flip, average="values")

    def postprocess(self, output: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """1xhxw disparity -> float32 HxW disparity (>= 0) at the image's size (bilinear)."""
        return upsample(output.float(), size)[0].clamp(min=0).cpu().numpy().astype(np.float32)

    def write_prediction(self, result: np.ndarray, image: np.ndarray, name: str, save_dir: Path,
                         cfg: DepthConfig) -> dict[str, Any]:
        """``colour/<name>.png`` (colormap) + ``raw/<name>.png`` (16-bit, see ``read_disparity_png16``) and/or
        ``raw/<name>.npy`` (float32 disparity)."""
        from PIL import Image

        colormap, save_raw = cfg.colormap, cfg.save_raw
        (save_dir / "colour").mkdir(parents=True, exist_ok=True)
        (save_dir / "raw").mkdir(parents=True, exist_ok=True)
        Image.fromarray(colorize_disparity(result, colormap)).save(save_dir / "colour" / f"{name}.png")
        if save_raw in ("png16", "both"):
            save_disparity_png16(save_dir / "raw" / f"{name}.png", result)
        if save_raw in ("npy", "both"):
            np.save(save_dir / "raw" / f"{name}.npy", result.astype(np.float32))
        return {"min": float(result.min()), "max": float(result.max()), "mean": float(result.mean())}

    def dataset_images(self, source: str) -> list[Path] | None:
        """``predict source=nyu:DIR`` (a depth dataset folder, YAML or pseudo-label folder): its RGB images
        only (never its depth PNGs); None for a plain folder of images."""
        from visionlab.tasks.depth_modes import depth_dataset_images

        return depth_dataset_images(source)

    def summarize(self, records: list[dict[str, Any]], cfg: DepthConfig) -> dict[str, Any]:
        if not records:
            return {}
        return {"disparity": {"min": round(min(r["min"] for r in records), 6),
                              "max": round(max(r["max"] for r in records), 6),
                              "mean_of_means": round(float(np.mean([r["mean"] for r in records])), 6)},
                "outputs": {"colour": f"colour/ ({cfg.colormap})",
                            "raw": f"raw/ ({cfg.save_raw}: relative inverse depth)"}}

    # ------------------------------------------------------------------ serving (visionlab serve, dashboard)

    # png16 first: the default answer of `visionlab serve` is the raw map (docs/serving.md)
    response_formats = {"png16": "image/png", "color": "image/png", "json": "application/json"}

    def encode_response(self, result: np.ndarray, image: np.ndarray, fmt: str, meta: dict[str, Any],
                        options: dict[str, Any]) -> tuple[bytes, str] | dict[str, Any]:
        """png16: uint16 relative disparity at the image's size, ``disparity = value * disparity_scale`` (PNG
        text chunk); color: the colourised map (RGB PNG); json: size and disparity statistics, plus the colourised map with ``overlay``."""
        from visionlab.tasks.base import png_base64, png_bytes

        if fmt == "png16":
            values, scale = quantize_disparity(result)
            return png_bytes(values, disparity_scale=repr(scale)), "image/png"
        if fmt == "color":
            return png_bytes(colorize_disparity(result, options.get("colormap", "spectral"))), "image/png"
        out: dict[str, Any] = {"height": int(result.shape[0]), "width": int(result.shape[1]),
                               "output": "relative inverse depth (disparity): larger is nearer",
                               "disparity": {"min": float(result.min()), "max": float(result.max()),
                                             "mean": float(result.mean())}}
        if options.get("overlay"):
            out["images"] = {"disparity": png_base64(colorize_disparity(result, options.get("colormap", "spectral")))}
        return out

    def target_picture(self, sample: dict[str, Any]) -> np.ndarray:
        """Ground truth as colourised disparity (invalid pixels black), comparable with predictions."""
        target = np.asarray(sample["target"], dtype=np.float64).squeeze()
        valid = np.asarray(sample["valid"], dtype=bool).squeeze() & (target > 0)
        disparity = target if int(sample.get("space", 0)) == 1 else 1.0 / np.where(valid, target, 1.0)
        return colorize_disparity(np.where(valid, disparity, 0), "spectral", valid)

    # ------------------------------------------------------------------ extra modes and data tools

    def commands(self) -> dict[str, tuple[str, Callable[[dict[str, Any]], Any]]]:
        from visionlab.tasks import depth_modes

        return {
            "pseudo-label": ("Pseudo-label a folder of unlabeled images with a teacher (resumable, torchrun-"
                             "shardable). e.g. `visionlab depth pseudo-label model=TEACHER source=DIR name=NAME`",
                             lambda overrides: depth_modes.pseudo_label(self, overrides)),
            "features": ("Save a ViT model's DINOv2 patch features (.npy) and their PCA as RGB. "
                         "e.g. `visionlab depth features model=depth_anything_v2_vits.pth source=img.jpg`",
                         lambda overrides: depth_modes.features(self, overrides)),
        }

    def check_data(self, spec: str, out: Path | None, console: Any) -> int:
        from visionlab.tasks.depth_modes import check_depth_data

        return check_depth_data(self, spec, out, console)


register_task(DepthTask())
