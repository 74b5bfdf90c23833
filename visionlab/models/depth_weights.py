"""Weights for the depth models from local files only (nothing is downloaded).

- ``load_depth_checkpoint_file``: an official Depth-Anything-V2 checkpoint (``depth_anything_v2_vit{s,b,l}.pth``
  from the official repo, or the same tensors as ``.safetensors``) -> the registered ``dpt_vit*`` model, with
  the encoder size detected from the tensor shapes and a strict load.
- ``load_encoder_into``: a DINOv2 backbone checkpoint (facebookresearch ``dinov2_vit*14_pretrain.pth`` names,
  optionally under ``pretrained.``/``backbone.``, or timm ``vit_*_patch14_dinov2`` names) into the ViT encoder
  of a ``DPTDepth``, refusing files that cover < 90% of it (no silent training from scratch).

Every problem with a file is a one-line ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionlab.models.dpt import ENCODER_CONFIGS, DinoVisionTransformer, DPTDepth
from visionlab.models.pretrained import PretrainedError, read_state_dict
from visionlab.utils.checkpoint import CheckpointError

_MIN_COVERAGE = 0.9
_SHOW = 4  # key names quoted in an error message
_EMBED_KEY = "pretrained.patch_embed.proj.weight"  # [embed_dim, 3, 14, 14]: tells vits / vitb / vitl apart
_ENCODER_BY_DIM = {cfg["embed_dim"]: name for name, cfg in ENCODER_CONFIGS.items()}
# BEiT-style LayerScale names (gamma_1/gamma_2) -> DINOv2's; timm >= 1.0 dinov2 models already use ls1.gamma
_LAYERSCALE_ALIASES = ((r"\.gamma_1$", ".ls1.gamma"), (r"\.gamma_2$", ".ls2.gamma"))


def _read(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a ``.pth``/``.pt``/``.safetensors`` file (containers and ``module.`` prefixes removed)."""
    try:
        return read_state_dict(path)  # torch.load(weights_only=True) or safetensors; unwraps {"model": ...}
    except PretrainedError as e:  # already one line naming the file
        raise CheckpointError(str(e)) from None


def _keys_summary(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOW})" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _check_against(path: str | Path, what: str, expected: dict[str, torch.Tensor],
                   given: dict[str, torch.Tensor]) -> None:
    """CheckpointError (one line, first few names + counts) unless ``given`` has exactly the keys and shapes."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not a {what} checkpoint: {len(missing)} missing keys [{_keys_summary(missing)}], "
            f"{len(unexpected)} unexpected keys [{_keys_summary(unexpected)}]"
        )
    wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if given[k].shape != v.shape]
    if wrong:
        raise CheckpointError(
            f"{path}: not a {what} checkpoint: {len(wrong)} tensors of the wrong shape: {_keys_summary(wrong)}"
        )


def load_depth_checkpoint_file(path: str | Path) -> tuple[DPTDepth, dict[str, Any]]:
    """Build the ``dpt_vit{s,b,l}`` model matching an official Depth-Anything-V2 checkpoint and load it strictly.

    Returns ``(model, info)`` with ``info = {"model", "encoder", "source", "params"}``; the model is in train
    mode as built (call ``.eval()`` for inference)."""
    sd = _read(path)
    # our own visionlab checkpoints hold the same tensors under the wrapper's names (net.*, + mean/std buffers)
    if all(k.startswith("net.") or k in ("mean", "std") for k in sd):
        sd = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")}
    embed = sd.get(_EMBED_KEY)
    encoder = _ENCODER_BY_DIM.get(int(embed.shape[0])) if embed is not None and embed.ndim == 4 else None
    if encoder is None:
        found = "no such key" if embed is None else f"shape {tuple(embed.shape)}"
        dims = "/".join(f"{d} ({n})" for d, n in _ENCODER_BY_DIM.items())
        raise CheckpointError(
            f"{path}: not a Depth-Anything-V2 checkpoint: '{_EMBED_KEY}' should have embed dim {dims}, found {found} "
            f"({len(sd)} keys, e.g. {_keys_summary(list(sd))})"
        )
    from visionlab.models.registry import create_model

    name = f"dpt_{encoder}"
    with torch.device("meta"):  # keys and shapes only, no memory or init time (ViT-L: 335M parameters)
        expected = create_model(name).net.state_dict()
    _check_against(path, f"Depth-Anything-V2 {encoder}", expected, sd)
    model = create_model(name)
    model.net.load_state_dict(sd, strict=True)
    params = sum(p.numel() for p in model.parameters())
    info = {"model": name, "encoder": encoder, "source": str(path), "params": params}
    return model, info


def _vit_of(model: nn.Module) -> DinoVisionTransformer:
    for candidate in (model, getattr(model, "encoder", None), getattr(model, "pretrained", None)):
        if isinstance(candidate, DinoVisionTransformer):
            return candidate
    raise CheckpointError(
        f"{type(model).__name__} has no DINOv2 encoder: DINOv2 weights apply to the dpt_vit* depth models only"
    )


def load_encoder_into(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a DINOv2 ViT/14 backbone checkpoint into the encoder of ``model`` (a ``DPTDepth``, a
    ``DepthAnythingV2`` or a bare ``DinoVisionTransformer``); the DPT head is left as it is.

    Accepts official DINOv2 names (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``,
    ``norm.*``, ``mask_token``) under an optional ``pretrained.``/``backbone.`` prefix (so a full
    Depth-Anything-V2 checkpoint gives its encoder), and timm ``vit_*_patch14_dinov2`` names (identical
    except that timm has no ``mask_token``; a classifier ``head`` is ignored). Raises CheckpointError on a shape
    mismatch or when < 90% of the encoder's tensors are in the file.
    Returns ``{"loaded", "missing", "unexpected", "source"}``."""
    vit = _vit_of(model)
    target = vit.state_dict()
    src = _read(path)
    for prefix in ("net.pretrained.", "pretrained.", "backbone.", "encoder."):
        if any(k.startswith(prefix) for k in src):
            src = {k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix)}
            break
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in src.items():
        for pattern, repl in _LAYERSCALE_ALIASES:
            key = re.sub(pattern, repl, key)
        if key not in target:
            if not key.startswith(("head.", "fc_norm.")):  # classifier parts a backbone does not have
                unexpected.append(key)
            continue
        if value.shape != target[key].shape:
            raise CheckpointError(
                f"{path}: shape mismatch at '{key}': file has {tuple(value.shape)}, the DINOv2 encoder "
                f"(embed dim {vit.embed_dim}, {len(vit.blocks)} blocks) expects {tuple(target[key].shape)}"
            )
        mapped[key] = value
    missing = [k for k in target if k not in mapped]
    if len(mapped) < _MIN_COVERAGE * len(target):
        raise CheckpointError(
            f"{path}: only {len(mapped)}/{len(target)} tensors of the DINOv2 encoder found in the file (need "
            f"{_MIN_COVERAGE:.0%}); missing e.g. [{_keys_summary(missing)}]: is this a DINOv2 ViT/14 state dict?"
        )
    vit.load_state_dict(mapped, strict=False)
    return {"loaded": len(mapped), "missing": missing, "unexpected": unexpected, "source": str(path)}
