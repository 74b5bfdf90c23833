"""Rebuild a model from a checkpoint alone (``model=`` accepts a weights file or a run folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionlab.models.registry import create_model
from visionlab.utils.checkpoint import CheckpointError, load_checkpoint


def looks_like_checkpoint(ref: str) -> bool:
    p = Path(ref)
    return p.suffix == ".safetensors" or p.is_dir() or p.is_file()


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


def load_model(ref: str | Path, device: torch.device | str = "cpu", task: str | None = None) -> tuple[nn.Module, dict]:
    path = resolve_weights(ref)
    state, meta, _ = load_checkpoint(path)
    if task is not None and meta.get("task") != task:
        raise CheckpointError(f"{path}: is a '{meta.get('task')}' checkpoint, not a '{task}' one")
    model = build_from_meta(meta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit model {meta['arch']}: {str(e).splitlines()[0]}") from None
    meta["path"] = str(path)
    return model.to(device).eval(), meta
