"""What a task is. The engine (trainer, evaluator, predictor, compare) only talks to this interface and
never branches on task names: a task owns its config, data, model builder, loss, metrics, visuals and
post-processing. A new task is one file that subclasses ``Task`` plus one ``register_task`` call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from visionlab.cfg import BaseConfig
from visionlab.metrics.base import Metrics


class Task(ABC):
    name: str
    description: str = ""  # one line for `visionlab --help`
    config_cls: type[BaseConfig]
    fitness_key: str  # metric that decides the best checkpoint (higher is better)
    summary_keys: tuple[str, ...] = ()  # metrics shown per epoch and in `visionlab compare` / `runs`
    inherit_from_checkpoint: tuple[str, ...] = ("imgsz",)  # val/predict take these from the training config
    compare_keys: tuple[str, ...] = ()  # extra metrics in `visionlab compare`
    compare_prefixes: tuple[str, ...] = ()  # ... and every metric starting with one of these

    def eval_loss_applies(self, outputs: torch.Tensor, batch: dict[str, Any]) -> bool:
        """Whether the training loss can be computed on this evaluation batch."""
        return True

    @abstractmethod
    def build_dataset(self, cfg: BaseConfig, split: str, train: bool) -> Dataset: ...

    @abstractmethod
    def model_spec(self, cfg: BaseConfig) -> tuple[str, dict[str, Any]]:
        """(registered model name, builder kwargs): stored in checkpoints to rebuild the model."""

    def load_pretrained(self, model: nn.Module, cfg: BaseConfig) -> None:
        """Apply ``cfg.pretrained`` weights to a freshly built model (default: nothing to do)."""

    @abstractmethod
    def build_loss(self, cfg: BaseConfig, train_set: Dataset) -> nn.Module:
        """A module called as ``loss(outputs, batch) -> scalar tensor``."""

    @abstractmethod
    def new_metrics(self, cfg: BaseConfig, device: torch.device, sync: bool = True) -> Metrics:
        """``sync``: reduce over DDP ranks at compute()."""

    @abstractmethod
    def preprocess(self, batch: dict[str, Any], device: torch.device, cfg: BaseConfig) -> dict[str, Any]:
        """Move a collated batch to ``device`` and normalise it; ``batch['image']`` is the model input."""

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return torch.utils.data.default_collate(samples)

    def save_visuals(self, model: nn.Module, dataset: Dataset, save_dir: Path, cfg: BaseConfig,
                     device: torch.device) -> list[Path]:
        return []

    @abstractmethod
    def predict(self, model: nn.Module, meta: dict[str, Any], cfg: BaseConfig, items: list[tuple[Path, str]],
                save_dir: Path, device: torch.device) -> dict[str, Any]:
        """Predict on ``items`` ((image path, unique output name) pairs: this rank's shard), write outputs to
        ``save_dir``; return ``{"done": [paths], "skipped": [reasons], ...}`` for ``merge_predictions``."""

    def merge_predictions(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Task-specific summary over every rank's ``predict`` result."""
        return {}


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
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
