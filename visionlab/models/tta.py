"""Test-time augmentation for dense outputs: mirror images and extra scales.

``DenseTTA(model, scales=(1.0, 1.25), flip=True)`` is itself a model (float RGB 0..255 [B,3,H,W] in, [B,C,H,W]
out): it runs ``model`` on every (scale, mirror) version of the batch, brings each output back to the input's
size and orientation, and averages them. ``average="probabilities"`` (per-pixel classes) averages the softmax
and returns its log, so argmax, softmax and cross-entropy downstream see an ordinary logits tensor;
``average="values"`` (depth, disparity) averages the outputs themselves. Scaled sizes are rounded to the
model's ``input_multiple``. Plain tensor ops: it traces and exports like the model it wraps. Around a graph that
takes one input size only (an ONNX file exported without dynamic H/W: ``fixed_hw``) it passes that size on, so
callers still feed it imgsz, and refuses scales other than 1.0, which that graph cannot run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DenseTTA(nn.Module):
    def __init__(self, model: nn.Module, scales: Sequence[float] = (1.0,), flip: bool = True,
                 average: str = "probabilities"):
        super().__init__()
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales={list(scales)}: expected positive numbers, e.g. [1.0, 1.25]")
        if average not in ("probabilities", "values"):
            raise ValueError(f"average={average!r}: expected 'probabilities' or 'values'")
        self.average = average
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.input_multiple = int(getattr(model, "input_multiple", 1) or 1)
        self.fixed_hw = getattr(model, "fixed_hw", None)
        if self.fixed_hw and self.scales != (1.0,):
            h, w = self.fixed_hw
            from visionlab.cfg import ConfigError  # a user's setting: one line from the CLI

            raise ConfigError(f"tta_scales={list(self.scales)}: this model takes {h}x{w} inputs only (an ONNX graph "
                             "exported without dynamic H/W); use tta_scales=[1.0] or re-export with dynamic=true")

    def _size(self, h: int, w: int, scale: float) -> tuple[int, int]:
        m = self.input_multiple
        return max(m, int(h * scale / m + 0.5) * m), max(m, int(w * scale / m + 0.5) * m)  # half up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        total = None
        for scale in self.scales:
            size = self._size(h, w, scale)
            xs = x if size == (h, w) else F.interpolate(x, size, mode="bilinear", align_corners=False)
            for mirrored in ((False, True) if self.flip else (False,)):
                out = self.model(xs.flip(-1) if mirrored else xs).float()
                if mirrored:
                    out = out.flip(-1)
                if out.shape[-2:] != (h, w):
                    out = F.interpolate(out, (h, w), mode="bilinear", align_corners=False)
                view = out.softmax(1) if self.average == "probabilities" else out
                total = view if total is None else total + view
        mean = total / (len(self.scales) * (2 if self.flip else 1))
        return mean.clamp_min(1e-8).log() if self.average == "probabilities" else mean


def with_tta(model: nn.Module, scales: Sequence[float], flip: bool, average: str = "probabilities") -> nn.Module:
    """``model`` itself when there is nothing to augment (one scale of 1.0, no flip), else a DenseTTA."""
    if not flip and tuple(float(s) for s in scales) == (1.0,):
        return model
    return DenseTTA(model, scales, flip, average)
