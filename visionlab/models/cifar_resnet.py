"""The CIFAR ResNet of He et al. 2016 (sec. 4.2) as implemented by Idelbayev (akamaster/pytorch_resnet_cifar10).

Depth 6n+2: a 3x3 conv (16 channels), three stages of n basic blocks at 16/32/64 channels (stride 1, 2, 2),
global average pooling and a ``linear`` head. Shortcuts are "option A": a strided identity with the new
channels zero-padded, so the net has no projection weights (ResNet-20: 269,722 parameters).

The inner network's state-dict keys are exactly those of the published ``resnet{20,32,44,56}-*.th`` files
after stripping ``module.`` (``conv1.weight``, ``layer1.0.bn1.running_mean``, ..., ``linear.bias``); the
registered builders wrap it in ``Normalized`` with the ImageNet mean/std those weights were trained with
(shared/weights/cifar10_resnet/SOURCE.md), so the full model's keys are ``net.<key>`` + ``mean``/``std``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.models.classify import normalized, takes_class_names
from visionlab.models.registry import register_model
from visionlab.models.segmentation import IMAGENET_MEAN, IMAGENET_STD
from visionlab.utils.checkpoint import CheckpointError


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the channels (planes // 4 on each side)."""

    def __init__(self, pad_channels: int):
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_channels, self.pad_channels))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # parameter-free, so it adds no keys (matches the published checkpoints' 'shortcut' = LambdaLayer)
        self.shortcut = ShortcutA(cout // 4) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 inputs (any size works: global average pooling)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # the reference init (kaiming normal on convs and the head)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*(BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                               for i in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CifarResNet behind ImageNet mean/std normalisation of [0, 255] input (grey input: MNIST stats)."""
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else (None, None)
    return normalized(CifarResNet(depth, num_classes, in_channels), in_channels, mean, std)


@register_model("classify")
@takes_class_names
def cifar_resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return cifar_resnet(20, num_classes, in_channels)


@register_model("classify")
@takes_class_names
def cifar_resnet32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return cifar_resnet(32, num_classes, in_channels)


@register_model("classify")
@takes_class_names
def cifar_resnet44(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return cifar_resnet(44, num_classes, in_channels)


@register_model("classify")
@takes_class_names
def cifar_resnet56(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return cifar_resnet(56, num_classes, in_channels)


def _short_keys(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "") if keys else "none"


def load_cifar_resnet_checkpoint(path: str | Path) -> nn.Module:
    """A ready model (eval mode) from an Idelbayev ``.th`` file (``{'state_dict': ..., 'best_prec1'}``, keys
    prefixed ``module.``) or a plain state dict. Loaded with ``weights_only=True``; depth and class count come
    from the keys; the load is strict. CheckpointError (one line) for an unreadable or non-matching file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or pickled code that weights_only refuses
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: cannot read as a torch weights file ({type(e).__name__}: {first})") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state dict (or {{'state_dict': ...}}) of tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    blocks = {int(m[1]) for k in sd if (m := re.match(r"layer1\.(\d+)\.", k))}
    if not blocks or "linear.weight" not in sd or "conv1.weight" not in sd:
        raise CheckpointError(f"{path}: not a CIFAR ResNet state dict (no conv1/layer1.N/linear keys; found "
                              f"{_short_keys(sorted(sd))})")
    depth = 6 * (max(blocks) + 1) + 2
    num_classes, in_channels = sd["linear.weight"].shape[0], sd["conv1.weight"].shape[1]
    model = cifar_resnet(depth, num_classes, in_channels)
    target = model.net.state_dict()
    # pre-1.0 checkpoints have no BN num_batches_tracked; torch's strict load fills it in, so do we
    missing = sorted(k for k in set(target) - set(sd) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(sd) - set(target))
    wrong = [k for k in sorted(set(sd) & set(target)) if sd[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: does not match CIFAR ResNet-{depth} (option-A, 16/32/64): missing keys "
            f"{_short_keys(missing)}; unexpected keys {_short_keys(unexpected)}; shape mismatch {_short_keys(wrong)}")
    model.net.load_state_dict(sd, strict=True)
    return model.eval()
