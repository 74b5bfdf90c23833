"""Checkpoints as safetensors: weights plus JSON metadata that is enough to rebuild the model.

A ``last`` checkpoint also carries the trainer state (optimizer, scheduler, epoch ...). Nested state is
flattened: tensors go into the safetensors body under ``state/...`` keys, everything else into JSON
metadata, so loading never unpickles anything (safe on untrusted files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from visionlab.utils.files import atomic_write


FORMAT = "visionlab-checkpoint-v1"
_TENSOR_TAG = "__tensor__:"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or not a visionlab checkpoint."""


def _pack(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"state/{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return _TENSOR_TAG + key
    if isinstance(obj, dict):
        # JSON keys are strings: remember int keys (optimizer state is keyed by param index)
        return {"__dict__": [[k, _pack(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        packed = [_pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": packed} if isinstance(obj, tuple) else packed
    return obj


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, str) and obj.startswith(_TENSOR_TAG):
        return tensors[obj[len(_TENSOR_TAG):]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unpack(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, dict) and "__tuple__" in obj:
        return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    return obj


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write weights (+ optional trainer state) atomically. ``meta`` must be JSON-serialisable."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    metadata = {"format": FORMAT, "meta": json.dumps(meta, default=str)}
    if train_state is not None:
        metadata["train_state"] = json.dumps(_pack(train_state, "train", tensors))
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a visionlab checkpoint; CheckpointError naming the file on any problem."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            ours = metadata.get("format") == FORMAT
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors and ours else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint (corrupt or truncated?): {e}") from None
    if not ours:
        raise CheckpointError(f"{path}: not a visionlab checkpoint (no '{FORMAT}' metadata)")
    return metadata, tensors


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> tuple[dict, dict, dict | None]:
    """Return (model_state, meta, train_state). Raises CheckpointError with the file name on any problem."""
    path = Path(path)
    metadata, tensors = _read(path, with_tensors=True)
    meta = json.loads(metadata["meta"])
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    train_state = None
    if with_train_state:
        if "train_state" not in metadata:
            raise CheckpointError(f"{path}: holds weights only, no trainer state to resume from")
        train_state = _unpack(json.loads(metadata["train_state"]), tensors)
    return model_state, meta, train_state


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without reading its tensors."""
    return json.loads(_read(Path(path), with_tensors=False)[0]["meta"])


def is_visionlab_checkpoint(path: str | Path) -> bool:
    """True for a readable visionlab checkpoint; False for other files (e.g. an official release's
    ``.pth``); CheckpointError for a ``.safetensors`` file that is corrupt or truncated."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return False
    try:
        _read(path, with_tensors=False)
    except CheckpointError as e:
        if "not a visionlab checkpoint" in str(e):
            return False
        raise
    return True
