"""visionlab: computer-vision models through their whole life (data, train, evaluate, predict, compare)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def train(task: str = "segment", **overrides: Any):
    """Python API: ``visionlab.train("segment", epochs=3, imgsz=128)`` -> run folder (Path)."""
    from visionlab.engine.trainer import train as _train
    from visionlab.engine.trainer import train_config
    from visionlab.tasks.base import get_task

    t = get_task(task)
    return _train(t, train_config(t, overrides))


def val(task: str = "segment", **overrides: Any) -> dict[str, float]:
    """``visionlab.val("segment", model="runs/segment/train", data="camvid:DIR")`` -> metrics."""
    from visionlab.engine.evaluator import eval_config, run_val
    from visionlab.tasks.base import get_task

    t = get_task(task)
    return run_val(t, eval_config(t, overrides, "val"))


def predict(task: str = "segment", **overrides: Any) -> dict[str, Any]:
    from visionlab.engine.evaluator import eval_config
    from visionlab.engine.predictor import run_predict
    from visionlab.tasks.base import get_task

    t = get_task(task)
    return run_predict(t, eval_config(t, overrides, "predict"))


def load_model(path: str, device: str = "cpu"):
    """Rebuild a model from a checkpoint or run folder: returns (model in eval mode, metadata)."""
    from visionlab.engine.model_io import load_model as _load

    return _load(path, device)
