"""The models an API instance serves: ``model=`` references -> loaded models with their task, input size,
labels and the metrics of their run. Whatever ``load_model`` returns (a torch module, an ONNX Runtime
wrapper ...) is served the same way: only ``Task.infer`` ever calls it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionlab.cfg import ConfigError
from visionlab.serve.batching import MicroBatcher
from visionlab.tasks.base import Task
from visionlab.utils.checkpoint import CheckpointError


@dataclass
class ServedModel:
    name: str
    task: Task
    model: Any
    meta: dict[str, Any]
    imgsz: tuple[int, int]
    path: Path
    metrics: dict[str, Any] | None = None
    keep_aspect: bool = False  # images keep their aspect ratio (the checkpoint's keep_aspect setting)
    batcher: MicroBatcher | None = field(default=None, repr=False)

    def infer(self, images: list[np.ndarray]) -> list[Any]:
        return self.task.infer(self.model, images, self.imgsz, self.meta.get("device", "cpu"),
                               keep_aspect=self.keep_aspect)

    def info(self) -> dict[str, Any]:
        formats = self.task.response_formats
        return {
            "name": self.name, "task": self.task.name, "path": str(self.path),
            "arch": self.meta.get("arch"), "params": self.meta.get("params"),
            "input_size": list(self.imgsz), "keep_aspect": self.keep_aspect, "input_multiple": int(getattr(self.model, "input_multiple", None) or self.meta.get("input_multiple") or 1),
            "labels": self.task.labels(self.meta), "formats": formats, "default_format": next(iter(formats)),
            "metrics": self.metrics,
        }


def parse_model_refs(refs: list[str]) -> list[tuple[str, str]]:
    """``PATH`` or ``NAME=PATH`` -> (name, path); a model is named after its run folder by default
    (``runs/segment/exp`` and ``runs/segment/exp/weights/best.safetensors`` are both ``exp``)."""
    out: list[tuple[str, str]] = []
    for ref in refs:
        ref = str(ref).strip()
        name, path = "", ref
        if "=" in ref and not Path(ref).exists():
            name, path = ref.split("=", 1)
        if not path:
            raise ConfigError(f"model={ref}: expected PATH or NAME=PATH (a run folder, checkpoint or .onnx file)")
        name = name.strip() or default_name(Path(path))
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"model={ref}: model name '{name}' may only hold letters, digits, '-', '_' and '.'")
        if any(name == n for n, _ in out):
            raise ConfigError(f"model={ref}: two models are named '{name}'; name them with model=NAME=PATH")
        out.append((name, path))
    if not out:
        raise ConfigError("serve needs at least one model=PATH (a run folder, checkpoint or .onnx file)")
    return out


def default_name(path: Path) -> str:
    if path.is_dir():
        return path.resolve().name
    if path.parent.name == "weights":  # runs/<task>/<run>/weights/best.safetensors
        return path.resolve().parent.parent.name
    return path.stem


def run_metrics(weights: Path) -> dict[str, Any] | None:
    """The final validation metrics in the model's run folder (results.json), if it has one. An exported
    file (ONNX, INT8, ...) is not the checkpoint those metrics are of: its own export parity check
    (``<file>.parity.json``: the fitness metric on a few val images, beside the checkpoint's on the same
    images) when there is one, else nothing."""
    if weights.suffix != ".safetensors":
        try:
            parity = json.loads(Path(f"{weights}.parity.json").read_text())["parity"]
            return {parity["metric"]: parity["exported"], f"checkpoint_{parity['metric']}": parity["reference"],
                    "images": parity["images"], "measured_by": "export parity check"}
        except (OSError, ValueError, KeyError, TypeError):
            return None
    run = weights.parent.parent if weights.parent.name == "weights" else weights.parent
    try:
        results = json.loads((run / "results.json").read_text())
    except (OSError, ValueError):
        return None
    val = results.get("val") if isinstance(results, dict) else None
    return {k: v for k, v in val.items() if isinstance(v, (int, float, str))} if isinstance(val, dict) else None


def _load_any_task(path: str, device: str) -> tuple[Any, dict[str, Any], Task]:
    """Load with the task the checkpoint names; files only a task understands (an official release's
    weights) are offered to every task in turn."""
    from visionlab.engine.model_io import load_model, try_each_task
    from visionlab.tasks.base import get_task

    (model, meta), _ = try_each_task(lambda t: load_model(path, device, t))
    try:
        task = get_task(meta.get("task"))
    except ValueError:
        raise CheckpointError(f"{path}: cannot tell which task the model is for (metadata task="
                              f"{meta.get('task')!r})") from None
    return model, meta, task


def load_served_model(name: str, ref: str, device: str = "cpu") -> ServedModel:
    """Load one model and run it once on a blank image: a model that cannot run fails at start-up, not on
    the first request (which is also not slowed by lazy initialisation)."""
    from visionlab.cfg import as_size, default_config
    from visionlab.engine.model_io import resolve_weights

    weights = resolve_weights(ref) if Path(ref).is_dir() else Path(ref)
    if not weights.is_file():
        raise CheckpointError(f"{ref}: model file not found (expected a run folder, checkpoint or .onnx file)")
    model, meta, task = _load_any_task(str(weights), device)
    size = meta.get("imgsz") or (meta.get("config") or {}).get("imgsz") or default_config(task.name)["imgsz"]
    imgsz = tuple(int(s) for s in as_size(size))
    meta = {**meta, "device": device}
    # an exported graph of fixed H/W can only take imgsz (Task.infer falls back to it: say so in the model info)
    keep_aspect = bool((meta.get("config") or {}).get("keep_aspect")) and not getattr(model, "fixed_hw", None)
    served = ServedModel(name, task, model, meta, imgsz, weights, run_metrics(weights), keep_aspect)
    try:
        probe = served.infer([np.zeros((*imgsz, 3), np.uint8)])
    except Exception as e:  # noqa: BLE001  any failure here is the checkpoint's, reported in one line
        raise CheckpointError(f"{weights}: the model does not run on a {imgsz[1]}x{imgsz[0]} image "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    # NaN / inf weights: every answer would be garbage (an all-zero mask) or a 500; weights checked too because
    # an argmax hides a NaN output
    tensors = list(model.state_dict().values()) if hasattr(model, "state_dict") else []
    if not all(_finite(out) for out in probe) or not all(_finite(t) for t in tensors):
        raise CheckpointError(f"{weights}: NaN or infinite values in the model's weights or in its output on a "
                              "blank image (damaged or diverged checkpoint); refusing to serve it")
    return served


def _finite(value: Any) -> bool:
    """Whether every number in a task's inference result (array, tensor, dict / list of them) is finite."""
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    return not np.issubdtype(arr.dtype, np.floating) or bool(np.isfinite(arr).all())
