"""Image classification (CIFAR-10/100, MNIST / Fashion-MNIST idx files, image folders and zips).

Data path without per-sample Python: a split is decoded once into RAM as a uint8 tensor
(visionlab.data.classify); the Dataset's ``__getitems__`` returns a whole collated batch (one tensor gather),
and augmentation (flip / translate / cutout) runs batched on the device in ``preprocess``. Datasets with only
train/test get a seeded, class-stratified ``val_fraction`` holdout carved from train for per-epoch validation
and best-checkpoint selection; ``split=test`` evaluates the untouched test set.

Class names travel in the model's builder kwargs (``classes``), so a checkpoint rebuilds and names its
predictions without the data. Extra modes (``compare-optimizers``), the data check and the figures live in
``visionlab/tasks/classify_modes.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn
from torch.utils.data import Dataset

from visionlab.cfg import BaseConfig, ConfigError
from visionlab.data.classify import (
    CIFAR10_CLASSES, BatchAugment, ClassifySource, ClassifySplit, available_splits, fraction_subset, holdout,
    load_split, parse_classify_data,
)
from visionlab.data.io import DataError
from visionlab.metrics.classify import ClassifyMetrics, fold_tta
from visionlab.models import classify as _models  # noqa: F401  (registers every classify model)
from visionlab.tasks.base import Metrics, Task, register_task

HOLDOUT_SEED = 0  # the val holdout ignores `seed`: runs with different seeds validate on the same images
WHITENING_IMAGES = 5000  # airbench94 whitens from 5000 training images


class ClassifyConfig(BaseConfig):
    val_fraction: float
    hflip: bool
    translate: int
    cutout: int
    label_smoothing: float
    tta: bool
    kd_alpha: float
    kd_temperature: float
    width: float | None
    dropout: float
    batchnorm: bool
    topk: int

    @field_validator("val_fraction", "dropout")
    @classmethod
    def _below_one(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1)")
        return v

    @field_validator("label_smoothing", "kd_alpha")
    @classmethod
    def _unit(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("must be between 0 and 1")
        return v

    @field_validator("translate", "cutout")
    @classmethod
    def _pixels(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0 pixels")
        return v

    @field_validator("kd_temperature", "width", "topk")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be > 0")
        return v


# ----------------------------------------------------------------------------- data


_LOADED: dict[tuple, ClassifySplit] = {}  # in-process memo: train, val holdout, whitening share one decode


def fit_size(split: ClassifySplit, imgsz: tuple[int, int]) -> ClassifySplit:
    """Resize every image to ``imgsz`` once, at load (bilinear, antialiased; MNIST 28 -> 32 for example)."""
    if tuple(split.images.shape[-2:]) == tuple(imgsz):
        return split
    out = torch.empty((len(split), split.channels, *imgsz), dtype=torch.uint8)
    for start in range(0, len(split), 4096):  # chunks bound the float copy's memory
        chunk = split.images[start:start + 4096].float()
        out[start:start + 4096] = F.interpolate(chunk, size=tuple(imgsz), mode="bilinear", antialias=True,
                                                align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return ClassifySplit(out, split.labels, split.classes, split.paths_or_ids, split.skipped, split.name)


def _load(source: ClassifySource, split: str, classes: list[str] | None, cfg: ClassifyConfig) -> ClassifySplit:
    key = (source.spec, str(source.root), source.root.stat().st_mtime_ns, split, tuple(cfg.imgsz), cfg.cache)
    hit = _LOADED.get(key)
    if hit is None or (classes is not None and hit.classes != list(classes)):
        hit = fit_size(load_split(source, split, classes=classes, imgsz=tuple(cfg.imgsz), cache=cfg.cache),
                       cfg.imgsz)
        while len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = hit
    return hit


class ClassifyDataset(Dataset):
    """A split in RAM. ``__getitems__`` returns an already collated batch (one gather, no per-sample
    Python); training batches are marked ``train`` so ``preprocess`` augments them."""

    def __init__(self, split: ClassifySplit, train: bool):
        self.split, self.train = split, train
        self.classes = split.classes

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.split.images[i], "target": self.split.labels[i], "index": i}

    def name_of(self, i: int) -> str:  # the file inside the dataset, or the official file name / index
        return self.split.paths_or_ids[i]

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {"image": self.split.images[idx], "target": self.split.labels[idx], "index": idx}
        if self.train:
            batch["train"] = True
        return batch


# ----------------------------------------------------------------------------- loss and results


class ClassifyLoss(nn.Module):
    """Cross-entropy with label smoothing; with a teacher (``batch["teacher"]``) Hinton distillation:
    ``(1 - alpha) * CE + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``."""

    def __init__(self, label_smoothing: float = 0.0, kd_alpha: float = 0.5, kd_temperature: float = 4.0):
        super().__init__()
        self.label_smoothing, self.alpha, self.temperature = label_smoothing, kd_alpha, kd_temperature

    def forward(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        logits = fold_tta(outputs, batch)
        ce = F.cross_entropy(logits, batch["target"], label_smoothing=self.label_smoothing)
        teacher = batch.get("teacher")
        if teacher is None or self.alpha == 0:
            return ce
        if teacher.shape != logits.shape:
            raise ConfigError(f"teacher outputs {list(teacher.shape[1:])} classes, the student "
                              f"{list(logits.shape[1:])}: distillation needs the same classes")
        t = self.temperature  # T^2 keeps the soft-target gradients at the scale of the hard ones (Hinton)
        kd = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher.float() / t, 1), log_target=True,
                      reduction="batchmean") * t * t
        return (1 - self.alpha) * ce + self.alpha * kd


@dataclass
class Classification:
    """One image's prediction: softmax ``probs`` over ``classes`` (the checkpoint's names)."""

    probs: np.ndarray
    classes: list[str]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.classes[i], float(self.probs[i])) for i in order]

    @property
    def label(self) -> str:
        return self.classes[int(self.probs.argmax())]


def _builder(name: str) -> Callable[..., nn.Module]:
    from visionlab.models.registry import get_builder, list_models

    if name not in list_models("classify"):
        raise ConfigError(f"model={name} is not a classify model nor a checkpoint; classify models: "
                          f"{', '.join(list_models('classify'))}")
    return get_builder(name)


# ----------------------------------------------------------------------------- the task


class ClassifyTask(Task):
    name = "classify"
    description = "Image classification: CIFAR-10/100, MNIST, Fashion-MNIST, image folders and zips."
    config_cls = ClassifyConfig
    fitness_key = "accuracy"
    fitness_mode = "max"
    summary_keys = ("accuracy", "top5")
    compare_keys = ("top5", "mean_class_acc")
    inherit_from_checkpoint = ("data", "imgsz", "val_fraction", "tta")

    # ---- data ----

    def class_names(self, cfg: ClassifyConfig) -> list[str]:
        """The run's classes in output order: the checkpoint's when ``model=`` is one (val, predict,
        fine-tuning), else the training split's (official names, or sorted class folders)."""
        from visionlab.engine.model_io import looks_like_checkpoint, read_model_meta

        if looks_like_checkpoint(cfg.model):
            names = self.labels(read_model_meta(cfg.model, self))
            if names:
                return names
        return _load(parse_classify_data(cfg.data), "train", None, cfg).classes

    def load_classify_split(self, cfg: ClassifyConfig, split: str) -> ClassifySplit:
        """``split`` of ``cfg.data`` in RAM at ``imgsz``: train (minus the val holdout, then ``fraction``),
        val (native, or the holdout), test."""
        source = parse_classify_data(cfg.data)
        classes, native = self.class_names(cfg), available_splits(source)
        carve = "val" not in native and "train" in native and cfg.val_fraction > 0
        if split == "val" and carve:
            return holdout(_load(source, "train", classes, cfg), cfg.val_fraction, HOLDOUT_SEED)[1]
        if split not in native:
            hint = (" (val_fraction=0: no holdout; set e.g. val_fraction=0.1, or evaluate split=test)"
                    if split == "val" else "")
            raise DataError(f"data={cfg.data}: no split '{split}'; it has {', '.join(native) or 'none'}{hint}")
        out = _load(source, split, classes, cfg)
        if split == "train":
            out = holdout(out, cfg.val_fraction, HOLDOUT_SEED)[0] if carve else out
            out = fraction_subset(out, cfg.fraction, cfg.seed)
        return out

    def build_dataset(self, cfg: ClassifyConfig, split: str, train: bool) -> Dataset:
        return ClassifyDataset(self.load_classify_split(cfg, split), train)

    def collate(self, samples: Any) -> dict[str, Any]:
        if isinstance(samples, dict):  # ClassifyDataset.__getitems__ collated the batch already
            return samples
        return torch.utils.data.default_collate(samples)

    def augmenter(self, cfg: ClassifyConfig) -> BatchAugment:
        return BatchAugment(flip=cfg.hflip, translate=cfg.translate, cutout=cfg.cutout)

    def preprocess(self, batch: dict[str, Any], device: torch.device, cfg: ClassifyConfig) -> dict[str, Any]:
        """Training batches: batched flip / translate / cutout on the device, random numbers from torch's
        global generator (re-seeded every epoch by the trainer: reproducible, also on resume). Evaluation
        with ``tta``: the flipped images follow the originals (the loss and metrics average both halves)."""
        images = batch["image"].to(device, non_blocking=True)
        training = bool(batch.get("train"))
        if training and cfg.augment:
            images = self.augmenter(cfg)(images)  # on uint8: a quarter of the bytes to move
        images = images.float()  # models normalise their input themselves
        out = {"image": images, "target": batch["target"].to(device, non_blocking=True).long(),
               "index": batch["index"]}
        if not training and cfg.tta:
            out["image"], out["tta"] = torch.cat([images, images.flip(3)]), True
        return out

    # ---- model ----

    def model_spec(self, cfg: ClassifyConfig) -> tuple[str, dict[str, Any]]:
        params = inspect.signature(_builder(cfg.model)).parameters
        classes = self.class_names(cfg)
        train = self.load_classify_split(cfg, "train")
        kwargs: dict[str, Any] = {"num_classes": len(classes), "in_channels": train.channels, "classes": classes}
        for key, value, neutral in (("width", cfg.width, None), ("dropout", cfg.dropout, 0.0),
                                    ("batchnorm", cfg.batchnorm, False)):
            if key in params and value is not None:
                default = params[key].default
                if isinstance(default, int) and not isinstance(default, bool):  # small_cnn: a channel count
                    if value < 1 or value != int(value):
                        raise ConfigError(f"{key}={value}: model {cfg.model} takes a whole number of channels")
                    value = int(value)
                kwargs[key] = value
            elif key not in params and value != neutral:
                takes = ", ".join(p for p in params if p not in ("num_classes", "in_channels"))
                raise ConfigError(f"{key}={value}: model {cfg.model} has no '{key}' setting (it takes {takes})")
        if "imgsz" in params:  # mlp: a fixed input size
            if cfg.imgsz[0] != cfg.imgsz[1]:
                raise ConfigError(f"imgsz={list(cfg.imgsz)}: model {cfg.model} needs square images")
            kwargs["imgsz"] = cfg.imgsz[0]
        return cfg.model, kwargs

    def load_pretrained(self, model: nn.Module, cfg: ClassifyConfig) -> None:
        """``pretrained=PATH``: the matching tensors of a state dict / checkpoint (a new head is skipped);
        null: fastnet's first layer becomes a patch-whitening filter bank of the training images."""
        if cfg.pretrained:
            from visionlab.tasks.classify_modes import load_matching_weights

            load_matching_weights(model, cfg.pretrained)
            return
        from visionlab.models.fastnet import FastNet, init_whitening

        if isinstance(getattr(model, "net", None), FastNet):
            images = self.load_classify_split(cfg, "train").images
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))[:WHITENING_IMAGES]
            init_whitening(model, images[pick], freeze=not model.net.whiten.weight.requires_grad)

    def load_foreign_checkpoint(self, path: Path) -> tuple[nn.Module, dict[str, Any]] | None:
        """Idelbayev's CIFAR-10 ResNet ``.th`` files (shared/weights/cifar10_resnet) as models or teachers."""
        if path.suffix not in (".th", ".pth", ".pt"):
            return None
        from visionlab.models.cifar_resnet import load_cifar_resnet_checkpoint

        model = load_cifar_resnet_checkpoint(path)
        n, channels = model.net.linear.out_features, model.net.conv1.in_channels
        classes = list(CIFAR10_CLASSES) if n == 10 else [f"class_{i}" for i in range(n)]
        model.class_names = classes
        kwargs = {"num_classes": n, "in_channels": channels, "classes": classes}
        return model, {"arch": f"cifar_resnet{model.net.depth}", "arch_kwargs": kwargs, "imgsz": [32, 32],
                       "config": {"imgsz": [32, 32]}, "source": "Idelbayev CIFAR-10 ResNet (.th)"}

    # ---- training and evaluation ----

    def build_loss(self, cfg: ClassifyConfig, train_set: Dataset) -> nn.Module:
        return ClassifyLoss(cfg.label_smoothing, cfg.kd_alpha, cfg.kd_temperature)

    def new_metrics(self, cfg: ClassifyConfig, device: torch.device, sync: bool = True) -> Metrics:
        return ClassifyMetrics(self.class_names(cfg), device, sync=sync)

    def save_visuals(self, model: nn.Module, dataset: Dataset, save_dir: Path, cfg: ClassifyConfig,
                     device: torch.device, metrics: Metrics | None = None) -> list[Path]:
        from visionlab.tasks.classify_modes import prediction_grid

        return [prediction_grid(self, model, dataset, save_dir / "predictions.png", device)]

    # ---- inference ----

    def labels(self, meta: dict[str, Any]) -> list[str] | None:
        names = meta.get("arch_kwargs", {}).get("classes")
        return list(names) if names else None

    def prepare(self, image: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
        from visionlab.data.transforms import resize_image

        return resize_image(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2), imgsz)

    def postprocess(self, output: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Logits C -> softmax probabilities (float32 C); the image size plays no part."""
        return torch.softmax(output.float(), 0).cpu().numpy()

    def infer(self, model: Any, images: Any, imgsz: tuple[int, int], device: torch.device | str = "cpu",
              sizes: Any = None, keep_aspect: bool = False) -> list[Classification]:
        """Like ``Task.infer``, but each result names its classes (the model's ``class_names``)."""
        probs = super().infer(model, images, imgsz, device, sizes, keep_aspect)
        names = getattr(model, "class_names", None)
        return [Classification(p, list(names) if names else [f"class_{i}" for i in range(len(p))]) for p in probs]

    def write_prediction(self, result: Classification, image: np.ndarray, name: str, save_dir: Path,
                         cfg: ClassifyConfig) -> dict[str, Any]:
        """``json/<name>.json``: the top-k classes with probabilities; predictions.csv is written by
        ``summarize`` from the returned records (all ranks)."""
        from visionlab.utils.files import atomic_write_json

        top = result.top(cfg.topk)
        atomic_write_json(save_dir / "json" / f"{name}.json",
                          {"image": name, "top": [{"class": c, "prob": round(p, 6)} for c, p in top]})
        return {"name": name, "label": top[0][0], "prob": top[0][1], "top": top,
                "csv": str(save_dir / "predictions.csv")}

    def summarize(self, records: list[dict[str, Any]], cfg: ClassifyConfig) -> dict[str, Any]:
        from visionlab.tasks.classify_modes import write_predictions_csv

        if not records:
            return {}
        write_predictions_csv(records, Path(records[0]["csv"]))
        labels, counts = np.unique([r["label"] for r in records], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {"class_histogram": {str(labels[i]): int(counts[i]) for i in order},
                "predictions_csv": records[0]["csv"]}

    # ---- serving (visionlab serve, dashboard): top-k JSON ----

    response_formats = {"json": "application/json"}

    def encode_response(self, result: Classification, image: np.ndarray, fmt: str, meta: dict[str, Any],
                        options: dict[str, Any]) -> dict[str, Any]:
        """json: the top-k classes (``options["topk"]``, default 5) with probabilities, drawn as a chart."""
        top = result.top(int(options.get("topk") or 5))
        return {"label": top[0][0], "top": [{"class": c, "prob": round(p, 6)} for c, p in top],
                "chart": {"title": "class probabilities", "values": {c: round(p, 4) for c, p in top}}}

    # ---- extra modes and data tools ----

    def commands(self) -> dict[str, tuple[str, Callable[[dict[str, Any]], Any]]]:
        from visionlab.tasks import classify_modes

        return {"compare-optimizers": (
            "Train a grid (SGD-Nesterov / Adam / RMSprop x plain, +dropout, +weight decay, +batchnorm) and "
            "compare it. e.g. `visionlab classify compare-optimizers data=DIR epochs=5 project=runs/opt name=grid`",
            lambda overrides: classify_modes.compare_optimizers(self, overrides))}

    def check_data(self, spec: str, out: Path | None, console: Any) -> int:
        from visionlab.tasks.classify_modes import check_classify_data

        return check_classify_data(spec, out, console)


register_task(ClassifyTask())
