"""What a task is. The engine (trainer, evaluator, predictor, compare, bench, serve) only talks to this
interface and never branches on task names.

Adding a task takes:
1. ``cfg/<task>.yaml``: the task's own keys and the engine defaults it changes (engine keys live in
   ``cfg/default.yaml``), and a ``BaseConfig`` subclass declaring those keys (validation);
2. its models (``@register_model("<task>")`` builders: float RGB 0..255 in, an ``input_multiple``
   attribute), losses, metrics (``visionlab.metrics.base.Metrics``) and data modules;
3. one file subclassing ``Task`` (the abstract methods below, plus the class attributes) and one
   ``register_task(...)`` call, imported from ``visionlab/tasks/__init__.py``.
The CLI (``visionlab <task> train|val|predict|cfg``), tracking, compare, resume and DDP then work unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from visionlab.cfg import BaseConfig
from visionlab.metrics.base import Metrics

Model = Callable[[torch.Tensor], torch.Tensor]  # a torch module, or an exported model behind the same call


class Task(ABC):
    name: str
    description: str = ""  # one line for `visionlab --help`
    config_cls: type[BaseConfig]
    fitness_key: str  # metric that decides the best checkpoint and ranks runs in `compare`
    fitness_mode: str = "max"  # "max": higher is better (mIoU, accuracy); "min": lower is better (AbsRel)
    summary_keys: tuple[str, ...] = ()  # metrics shown per epoch and in `visionlab compare` / `runs`
    # keys val/predict/bench take from the checkpoint's training config unless given (data, sizes, protocol)
    inherit_from_checkpoint: tuple[str, ...] = ("data", "imgsz")
    compare_keys: tuple[str, ...] = ()  # extra metrics in `visionlab compare`
    compare_prefixes: tuple[str, ...] = ()  # ... and every metric starting with one of these

    # ------------------------------------------------------------------ training and evaluation

    @abstractmethod
    def build_dataset(self, cfg: BaseConfig, split: str, train: bool) -> Dataset:
        """Samples are dicts with at least ``image`` (uint8 CxHxW); the rest is the task's business."""

    @abstractmethod
    def model_spec(self, cfg: BaseConfig) -> tuple[str, dict[str, Any]]:
        """(registered model name, builder kwargs): stored in checkpoints to rebuild the model."""

    def load_pretrained(self, model: nn.Module, cfg: BaseConfig) -> None:
        """Apply ``cfg.pretrained`` weights to a freshly built model (default: nothing to do)."""

    def load_foreign_checkpoint(self, path: Path) -> tuple[nn.Module, dict[str, Any]] | None:
        """A model from a file that is not a visionlab checkpoint (an official release's weights), with
        metadata like a visionlab checkpoint's (arch, arch_kwargs, imgsz ...); None if not recognised."""
        return None

    @abstractmethod
    def build_loss(self, cfg: BaseConfig, train_set: Dataset) -> nn.Module:
        """A module called as ``loss(outputs, batch) -> scalar``; ``batch["teacher"]`` holds the frozen
        teacher's outputs when ``teacher=`` is set."""

    @abstractmethod
    def new_metrics(self, cfg: BaseConfig, device: torch.device, sync: bool = True) -> Metrics:
        """``sync``: reduce over DDP ranks at compute()."""

    @abstractmethod
    def preprocess(self, batch: dict[str, Any], device: torch.device, cfg: BaseConfig) -> dict[str, Any]:
        """Move a collated batch to ``device``; ``batch['image']`` is the model input (float 0..255)."""

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return torch.utils.data.default_collate(samples)

    def eval_loss_applies(self, outputs: torch.Tensor, batch: dict[str, Any]) -> bool:
        """Whether the training loss can be computed on this evaluation batch."""
        return True

    def compare_shows(self, key: str) -> bool:
        """Whether `visionlab compare` shows this metric (default: summary/compare keys and the prefixes)."""
        return key in self.summary_keys or key in self.compare_keys or key.startswith(self.compare_prefixes)

    def save_visuals(self, model: nn.Module, dataset: Dataset, save_dir: Path, cfg: BaseConfig,
                     device: torch.device, metrics: Metrics | None = None) -> list[Path]:
        """Pictures of predictions on ``dataset``; ``metrics``: the evaluation just computed on it (so
        per-image records need no second pass)."""
        return []

    # ------------------------------------------------------------------ inference (predict, serve, bench)

    def labels(self, meta: dict[str, Any]) -> list[str] | None:
        """Names of the output classes/categories of a checkpoint (None when outputs are not classes)."""
        return None

    def inference_model(self, model: Model, cfg: BaseConfig) -> Model:
        """The model ``val`` and ``predict`` run: the loaded one, or the task's wrapper around it (segment:
        test-time augmentation from ``tta_flip=`` / ``tta_scales=``)."""
        return model

    def prepare(self, image: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
        """One HxWxC uint8 image -> the network-size array ``infer`` batches (default: plain resize)."""
        from visionlab.data.transforms import resize_image

        return resize_image(image, imgsz)

    @abstractmethod
    def postprocess(self, output: torch.Tensor, size: tuple[int, int]) -> Any:
        """One image's raw model output (no batch dim) -> the task's result for an image of ``size`` (H, W)."""

    @torch.no_grad()
    def infer(self, model: Model, images: Sequence[np.ndarray], imgsz: tuple[int, int],
              device: torch.device | str = "cpu", sizes: Sequence[tuple[int, int]] | None = None,
              keep_aspect: bool = False) -> list[Any]:
        """Batched, in memory, no files, no progress bars: HxWxC uint8 images of any size -> one result per
        image at its own size (or at ``sizes``). What predict, the API, the dashboard, pseudo-labelling
        and bench call. ``keep_aspect``: each image goes in at its own aspect ratio (shorter side min(imgsz),
        sides rounded to the model's input multiple) instead of stretched to imgsz; images of equal network
        size share a forward pass."""
        if not len(images):
            return []
        if keep_aspect and not getattr(model, "fixed_hw", None):  # a fixed-size ONNX graph takes imgsz only
            from visionlab.data.transforms import aspect_size

            multiple = int(getattr(model, "input_multiple", 1) or 1)
            net_sizes = [aspect_size(*im.shape[:2], min(imgsz), multiple) for im in images]
        else:
            net_sizes = [tuple(imgsz)] * len(images)
        if isinstance(model, nn.Module):
            model.eval()
        sizes = sizes or [im.shape[:2] for im in images]
        results: list[Any] = [None] * len(images)
        for net_size in dict.fromkeys(net_sizes):  # one forward per distinct size, in first-seen order
            idx = [i for i, s in enumerate(net_sizes) if s == net_size]
            batch = np.stack([self.prepare(images[i], net_size) for i in idx])
            x = torch.from_numpy(batch).to(device)
            x = (x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]).float()
            outputs = model(x).float()
            for i, out in zip(idx, outputs):
                results[i] = self.postprocess(out, tuple(sizes[i]))
        return results

    def dataset_images(self, source: str) -> list[Path] | None:
        """``predict source=SPEC``: the images of a dataset this task recognises (e.g. its val split), or
        None when ``source`` is not such a dataset (the engine then treats it as a file or folder)."""
        return None

    def write_prediction(self, result: Any, image: np.ndarray, name: str, save_dir: Path,
                         cfg: BaseConfig) -> dict[str, Any]:
        """Write one result under ``save_dir`` (named ``name``; ``cfg``: the predict settings, e.g. a colormap);
        return what ``summarize`` aggregates."""
        from visionlab.cfg import ConfigError

        raise ConfigError(f"task {self.name} cannot write predictions")

    def summarize(self, records: list[dict[str, Any]], cfg: BaseConfig) -> dict[str, Any]:
        """Task-specific summary over every ``write_prediction`` record (all ranks)."""
        return {}

    # ------------------------------------------------------------------ serving (visionlab serve, dashboard)

    # what ``POST /predict/{model}`` can answer: format name -> media type; the first is the default
    response_formats: dict[str, str] = {"json": "application/json"}

    def encode_response(self, result: Any, image: np.ndarray, fmt: str, meta: dict[str, Any],
                        options: dict[str, Any]) -> tuple[bytes, str] | dict[str, Any]:
        """One ``infer`` result -> an API response in ``fmt`` (a key of ``response_formats``): (bytes, media
        type) for binary formats, a JSON-able dict for "json". ``options``: ``overlay`` (bool: add pictures),
        ``topk`` (int). JSON answers may carry ``images`` ({name: base64 PNG}), ``chart`` ({"title",
        "values": {label: number}}) and ``legend`` ({label: "#rrggbb"}), which the dashboard draws as they
        are, so it never needs to know the task."""
        value = result.tolist() if isinstance(result, np.ndarray) else result
        return {"result": value}

    def target_picture(self, sample: dict[str, Any]) -> np.ndarray | None:
        """The ground truth of a ``build_dataset`` sample as an HxWx3 uint8 picture for the dashboard (None:
        nothing to draw, e.g. a class label)."""
        return None

    # ------------------------------------------------------------------ task-specific modes

    def commands(self) -> dict[str, tuple[str, Callable[[dict[str, Any]], Any]]]:
        """Extra CLI modes beyond train/val/predict/cfg: ``{name: (help line, fn(overrides))}``; ``fn``
        receives the parsed key=value overrides (e.g. depth's ``pseudo-label``)."""
        return {}

    # ------------------------------------------------------------------ data tools

    def check_data(self, spec: str, out: Path | None, console: Any) -> int:
        """``visionlab data check --task NAME SPEC``: name every bad file; exit code (0 = all good)."""
        from visionlab.cfg import ConfigError

        raise ConfigError(f"`visionlab data check` has no checks for task {self.name}")


def png_bytes(array: np.ndarray, **info: str) -> bytes:
    """An HxW / HxWx3 uint8 or HxW uint16 array as PNG bytes (``info``: text chunks), for API responses."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    for key, value in info.items():
        text.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=text, compress_level=1)  # speed over size
    return buffer.getvalue()


def png_base64(array: np.ndarray) -> str:
    import base64

    return base64.b64encode(png_bytes(array)).decode("ascii")


def upsample(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CxHxW -> CxH'xW' (bilinear), the usual first step of a dense task's ``postprocess``."""
    if tuple(output.shape[-2:]) == tuple(size):
        return output
    return F.interpolate(output[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _TASKS and type(_TASKS[task.name]) is not type(task):
        raise ValueError(f"task '{task.name}' is already registered by {type(_TASKS[task.name]).__name__}")
    if task.fitness_mode not in ("max", "min"):
        raise ValueError(f"task '{task.name}': fitness_mode must be 'max' or 'min', not {task.fitness_mode!r}")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    from visionlab import tasks  # noqa: F401  (importing the package registers the built-in tasks)

    if name not in _TASKS:
        raise ValueError(f"unknown task '{name}'; available: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def task_names() -> list[str]:
    from visionlab import tasks  # noqa: F401

    return sorted(_TASKS)


def better(task: Task, value: float, best: float | None) -> bool:
    """Whether ``value`` of the task's fitness metric improves on ``best`` (NaN never does)."""
    if value != value:
        return False
    if best is None or best != best:
        return True
    return value > best if task.fitness_mode == "max" else value < best
