"""Rebuild a model from a checkpoint alone (``model=`` accepts a weights file or a run folder), and the
input-size rule every mode checks (it comes from the model's ``input_multiple``, never from its name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from visionlab.engine.onnx_model import is_onnx_file
from visionlab.models.registry import create_model
from visionlab.utils.checkpoint import CheckpointError, is_visionlab_checkpoint, load_checkpoint

T = TypeVar("T")


def looks_like_checkpoint(ref: str) -> bool:
    p = Path(ref)
    return p.suffix in (".safetensors", ".pth", ".pt", ".th", ".ckpt", ".onnx", ".ort") or p.is_dir() or p.is_file()


def resolve_weights(ref: str | Path) -> Path:
    """A weights file, or a run folder -> its weights/best.safetensors (falling back to last)."""
    p = Path(ref)
    if p.is_dir():
        for name in ("best", "last"):
            candidate = p / "weights" / f"{name}.safetensors"
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p}: run folder has no weights/best.safetensors or weights/last.safetensors")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    return p


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    return create_model(meta["arch"], **meta["arch_kwargs"])


def read_model_meta(ref: str | Path, task: Any | None = None) -> dict[str, Any]:
    """The metadata of a checkpoint (its training config under "config"), without building the model."""
    from visionlab.utils.checkpoint import read_meta

    path = resolve_weights(ref)
    if is_visionlab_checkpoint(path):
        return read_meta(path)
    if is_onnx_file(path):  # exported by `visionlab export`: the metadata travels in the file
        from visionlab.engine.onnx_model import read_onnx_meta

        return read_onnx_meta(path)
    return _foreign(path, task)[1]


def try_each_task(read: Callable[[Any], T]) -> tuple[T, str | None]:
    """``read(None)`` for a file that names its task (a visionlab checkpoint or export), else ``read(task)`` for
    each task in turn (files only a task understands, like an official release's weights): (what ``read``
    returned, the name of the task that read it or None). The first CheckpointError when no task can."""
    from visionlab.tasks.base import get_task, task_names

    try:
        return read(None), None
    except CheckpointError as first:
        for name in task_names():
            try:
                return read(get_task(name)), name
            except CheckpointError:
                continue
        raise first from None


def read_any_model_meta(ref: str | Path) -> dict[str, Any]:
    """``read_model_meta`` for a file of any task, an official release's weights included; its "task" key
    says whose it is."""
    meta, task = try_each_task(lambda t: read_model_meta(ref, t))
    return {**meta, "task": task} if task else meta


def _foreign(path: Path, task: Any | None) -> tuple[nn.Module, dict[str, Any]]:
    loaded = task.load_foreign_checkpoint(path) if task is not None else None
    if loaded is None:
        what = f", nor a {task.name} checkpoint this task can read" if task is not None else ""
        raise CheckpointError(f"{path}: not a visionlab checkpoint{what}")
    return loaded


def load_model(ref: str | Path, device: torch.device | str = "cpu", task: Any | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``, metadata). ``task``: a Task (or its name) the checkpoint must
    belong to; with a Task object, files of official releases the task understands load too."""
    from visionlab.tasks.base import get_task

    task = get_task(task) if isinstance(task, str) else task
    path = resolve_weights(ref)
    if is_onnx_file(path):  # an exported model: an ONNX Runtime session behind the same call
        from visionlab.engine.onnx_model import load_onnx_model

        return load_onnx_model(path, device, task)
    if not is_visionlab_checkpoint(path):
        model, meta = _foreign(path, task)
        meta = {"task": task.name, "params": sum(p.numel() for p in model.parameters()), **meta, "path": str(path)}
        return model.to(device).eval(), meta
    state, meta, _ = load_checkpoint(path)
    if task is not None and meta.get("task") != task.name:
        raise CheckpointError(f"{path}: is a '{meta.get('task')}' checkpoint, not a '{task.name}' one")
    model = build_from_meta(meta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not fit model {meta['arch']}: "
                              f"{_state_mismatch(model.state_dict(), state)}") from None
    meta["path"] = str(path)
    return model.to(device).eval(), meta


def _state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], show: int = 3) -> str:
    """Which keys are missing, unexpected or of another shape: the first few of each, with counts."""
    def names(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (f" ... (+{len(keys) - show})" if len(keys) > show else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {list(given[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in given and given[k].shape != expected[k].shape]
    parts = [f"{len(v)} {what} [{names(v)}]" for what, v in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if v]
    return "; ".join(parts) or "the state dict does not load"


def check_input_size(model: nn.Module, cfg: Any, model_name: str) -> None:
    """Every size the run will feed the model (imgsz, and crop where the task has it) must be a multiple
    of the model's ``input_multiple`` (32 for most CNN encoders, 14 for ViT/14)."""
    from visionlab.cfg import ConfigError

    multiple = int(getattr(model, "input_multiple", 1) or 1)
    for key in ("imgsz", "crop"):
        size = getattr(cfg, key, None)
        if size and any(s % multiple for s in size):
            fix = [multiple * max(1, round(s / multiple)) for s in size]
            raise ConfigError(f"{key}={list(size)}: model {model_name} needs sides that are multiples of {multiple} "
                              f"(e.g. {key}=[{fix[0]},{fix[1]}])")
