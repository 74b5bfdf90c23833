"""Image classifiers. Each builder takes ``num_classes`` and ``in_channels`` and returns logits B x num_classes.

- ``fastnet``: airbench-style CIFAR speed net (visionlab/models/fastnet.py).
- ``cifar_resnet20/32/44/56``: Idelbayev's CIFAR ResNet, loads the published weights (cifar_resnet.py).
- ``resnet18``, ``mobilenetv3_small``, ``mobilenetv3_large``, ``shufflenetv2``: torchvision architectures
  (weights=None) with the stem adapted to 32x32 inputs, see each builder for what changed.
- ``mlp``, ``small_cnn``: MNIST baselines with optional dropout / batchnorm (regulariser comparisons).

Every model takes float images in [0, 255] (Bx3xHxW RGB or Bx1xHxW grey), normalises them itself (the
segmentation ``Normalized`` wrapper, so state-dict keys are ``net.*`` + ``mean``/``std`` in every task) and
has ``input_multiple`` (1 here: global pooling takes any size; ``mlp`` needs exactly ``imgsz``).
Every builder also takes ``classes`` (output class names, kept as ``model.class_names``): a checkpoint's
builder kwargs then carry its class names, so it rebuilds and labels its predictions without the data.
Importing this module registers all classify models, including those of fastnet.py and cifar_resnet.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from visionlab.cfg import ConfigError
from visionlab.models.registry import register_model
from visionlab.models.segmentation import IMAGENET_MEAN, IMAGENET_STD, Normalized

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class GreyNormalized(Normalized):
    """``Normalized`` for 1-channel nets that also accepts RGB: Bx3xHxW input becomes its ITU-R 601 luma
    first, so grey models take the project's standard RGB input (predict, serve, latency benchmarks) as
    well as Bx1xHxW batches straight from a grey dataset."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return super().forward(x)


def normalized(net: nn.Module, in_channels: int = 3, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, input_multiple: int = 1) -> Normalized:
    """``net`` behind per-channel normalisation of [0, 255] input, for any channel count.

    Defaults: CIFAR-10 statistics for 3 channels, MNIST statistics for 1, 0.5/0.5 otherwise. Reuses the
    segmentation ``Normalized`` (same state-dict layout) with buffers shaped 1xCx1x1; 1-channel nets get
    ``GreyNormalized``, which also takes RGB."""
    if mean is None or std is None:
        mean, std = {3: (CIFAR10_MEAN, CIFAR10_STD), 1: (MNIST_MEAN, MNIST_STD)}.get(
            in_channels, ((0.5,) * in_channels, (0.5,) * in_channels))
    if len(mean) != in_channels or len(std) != in_channels:
        raise ConfigError(f"normalisation has {len(mean)} mean / {len(std)} std values for {in_channels} channels")
    model = GreyNormalized(net) if in_channels == 1 else Normalized(net)
    model.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255  # replaces the 3-channel buffers
    model.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
    model.input_multiple = input_multiple
    return model


def takes_class_names(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Give ``builder`` a ``classes`` kwarg: the output class names (their count sets ``num_classes``),
    stored on the model as ``class_names`` (None when not given)."""

    @functools.wraps(builder)  # keeps __name__: the registry names models after their builder
    def build(*args, classes: Sequence[str] | None = None, **kwargs) -> nn.Module:
        if classes is not None:
            n = kwargs.setdefault("num_classes", len(classes))
            if n != len(classes):
                raise ConfigError(f"{builder.__name__}: num_classes={n} but {len(classes)} class names given")
        model = builder(*args, **kwargs)
        model.class_names = list(classes) if classes is not None else None
        return model

    return build


def _stem_conv(conv: nn.Conv2d, in_channels: int, stride: int = 1, kernel_size: int | None = None) -> nn.Conv2d:
    """A fresh conv like ``conv`` with another input channel count / stride / kernel (padding keeps the size)."""
    k = kernel_size or conv.kernel_size[0]
    return nn.Conv2d(in_channels, conv.out_channels, k, stride=stride, padding=k // 2, bias=conv.bias is not None)


def _first_strided_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2))


# ----------------------------------------------------------------------------- torchvision architectures


@register_model("classify")
@takes_class_names
def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-18 with the CIFAR stem: 3x3 stride-1 conv, no max-pool (32x32 -> 4x4 features)."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = _stem_conv(net.conv1, in_channels, stride=1, kernel_size=3)
    net.maxpool = nn.Identity()
    return normalized(net, in_channels, *_imagenet_stats(in_channels))


def _imagenet_stats(in_channels: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    # ImageNet statistics for RGB so ImageNet-pretrained torchvision weights fit; defaults otherwise
    return (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else (None, None)


def _mobilenetv3(variant: str, num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

    net = (mobilenet_v3_small if variant == "small" else mobilenet_v3_large)(weights=None, num_classes=num_classes)
    # 32x32 adaptation: stem stride 2 -> 1 and the first stride-2 block -> stride 1, so the overall stride is
    # 8 instead of 32 (4x4 final features at 32x32 instead of 1x1). Weight shapes are unchanged.
    stem = net.features[0][0]
    net.features[0][0] = _stem_conv(stem, in_channels, stride=1)
    _first_strided_conv(net.features[1:]).stride = (1, 1)
    return normalized(net, in_channels, *_imagenet_stats(in_channels))


@register_model("classify")
@takes_class_names
def mobilenetv3_small(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """torchvision MobileNetV3-Small; stem and first downsampling block at stride 1 (overall stride 8)."""
    return _mobilenetv3("small", num_classes, in_channels)


@register_model("classify")
@takes_class_names
def mobilenetv3_large(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """torchvision MobileNetV3-Large; stem and first downsampling block at stride 1 (overall stride 8)."""
    return _mobilenetv3("large", num_classes, in_channels)


@register_model("classify")
@takes_class_names
def shufflenetv2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """torchvision ShuffleNetV2 (``width`` 0.5/1.0/1.5/2.0); 3x3 stem at stride 1 and no max-pool (stride 8)."""
    from torchvision import models

    builders = {0.5: models.shufflenet_v2_x0_5, 1.0: models.shufflenet_v2_x1_0,
                1.5: models.shufflenet_v2_x1_5, 2.0: models.shufflenet_v2_x2_0}
    if float(width) not in builders:
        raise ConfigError(f"shufflenetv2 width={width}: expected one of 0.5, 1.0, 1.5, 2.0")
    net = builders[float(width)](weights=None, num_classes=num_classes)
    net.conv1[0] = _stem_conv(net.conv1[0], in_channels, stride=1)
    net.maxpool = nn.Identity()
    return normalized(net, in_channels, *_imagenet_stats(in_channels))


# ----------------------------------------------------------------------------- MNIST baselines


@register_model("classify")
@takes_class_names
def mlp(num_classes: int = 10, in_channels: int = 1, imgsz: int = 28, hidden: Sequence[int] = (512, 256),
        dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    """Dense baseline: flatten -> [Linear -> BatchNorm1d? -> ReLU -> Dropout?] per ``hidden`` -> Linear.
    Input must be exactly in_channels x imgsz x imgsz."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * imgsz * imgsz
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=not batchnorm))  # BN has its own bias
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    model = normalized(nn.Sequential(*layers), in_channels)
    model.imgsz = imgsz  # the one input size it accepts
    return model


@register_model("classify")
@takes_class_names
def small_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32, dropout: float = 0.0,
              batchnorm: bool = False) -> nn.Module:
    """Three 3x3 conv layers (width, 2*width, 4*width; max-pool after the first two), global average pool,
    dropout (if > 0) and a linear head. ``batchnorm`` adds BatchNorm after every conv."""
    layers: list[nn.Module] = []
    cin = in_channels
    for i, cout in enumerate((width, 2 * width, 4 * width)):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        if i < 2:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(cin, num_classes))
    return normalized(nn.Sequential(*layers), in_channels)


# registers fastnet and cifar_resnet* (they import ``normalized`` from here, so they come last)
from visionlab.models import cifar_resnet, fastnet  # noqa: E402,F401
