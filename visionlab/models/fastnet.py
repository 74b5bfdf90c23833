"""FastNet: a small CIFAR-10 speed net after Keller Jordan's airbench94 (itself from hlb-CIFAR10 and Page's
"How to train your ResNet"). ~1.97M parameters at width 1; 94% on CIFAR-10 in ~10 epochs with its recipe.

    whiten: 2x2 conv, 2*C*4 channels, no padding (32 -> 31), optionally initialised as a patch-whitening
            filter bank from the training images (``init_whitening``) and then frozen; GELU
    3 x ConvGroup: conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU   (64, 256, 256 x width)
    global max-pool -> linear (no bias) -> x 1/9

Why these choices (airbench's ablations): whitening the first layer makes the first epochs count; identity
("dirac") init of every 3x3 conv gives each block an implicit residual path without residual adds; frozen
BatchNorm scales with a scaled-down logit output keep the effective learning rates in check; pooling right
after the first conv of a group quarters the cost of everything that follows. Only plain convs, max-pool,
BN and GELU: fast on CPU at batch 1 and channels_last friendly. Global max-pool instead of MaxPool2d(3)
(identical at 32x32, where the last map is 3x3) lets other input sizes through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.models.classify import normalized, takes_class_names
from visionlab.models.registry import register_model


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    # identity init on the first cin filters: the block starts out (close to) passing its input through
    nn.init.dirac_(conv.weight.data[: min(cin, cout)])
    return conv


class ShiftBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1 (only the shift is learned) and fast-moving statistics for short
    schedules (momentum 0.4 = airbench's 0.6 in the other convention).

    The learned shift is stored divided by ``bias_scale`` and multiplied back in forward: plain SGD then
    moves the effective shift ``bias_scale**2`` times faster than other weights. That is airbench's 64x
    learning rate for BatchNorm biases (its ablation: -25% epochs to 94%), done in the parametrisation so
    the task-agnostic optimizer needs no special parameter group. Adam-type optimizers see ``bias_scale``x."""

    def __init__(self, c: int, bias_scale: float = 8.0):
        super().__init__(c, momentum=0.4)
        self.bias_scale = bias_scale
        self.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias * self.bias_scale,
                            self.training, self.momentum, self.eps)


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bias_scale: float = 8.0):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout)
        self.norm1 = ShiftBatchNorm(cout, bias_scale)
        self.conv2 = _conv3x3(cout, cout)
        self.norm2 = ShiftBatchNorm(cout, bias_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.gelu(self.norm1(x))
        return F.gelu(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, whiten_kernel: int = 2,
                 logit_scale: float = 1 / 9, bn_bias_lr: float = 64.0):
        super().__init__()
        widths = [max(8, round(w * width)) for w in (64, 256, 256)]
        whiten_width = 2 * in_channels * whiten_kernel ** 2  # +/- every eigen-filter of the patch covariance
        self.whiten = nn.Conv2d(in_channels, whiten_width, whiten_kernel, padding=0, bias=True)
        nn.init.zeros_(self.whiten.bias)
        s = bn_bias_lr ** 0.5
        self.groups = nn.Sequential(
            ConvGroup(whiten_width, widths[0], s), ConvGroup(widths[0], widths[1], s), ConvGroup(widths[1], widths[2], s))
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        x = torch.amax(x, dim=(2, 3))  # global max-pool
        return self.head(x) * self.logit_scale


@register_model("classify")
@takes_class_names
def fastnet(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, whiten_kernel: int = 2,
            train_whiten: bool = False, bn_bias_lr: float = 64.0) -> nn.Module:
    """airbench94-style net; ``width`` scales the 64/256/256 stage widths. Call ``init_whitening`` with
    training images before training (optional but it is what makes short schedules work). ``bn_bias_lr``:
    SGD learning-rate multiplier of the BatchNorm shifts (``ShiftBatchNorm``; 1 = plain BatchNorm).

    The whitening weights are frozen here (``train_whiten=False``), not only by ``init_whitening``: a model
    rebuilt from a checkpoint (resume, fine-tune) then has the same trainable parameters, hence the same
    optimizer parameter groups, as the run that wrote it."""
    model = normalized(FastNet(num_classes, in_channels, width, whiten_kernel, bn_bias_lr=bn_bias_lr), in_channels)
    model.net.whiten.weight.requires_grad_(train_whiten)
    return model


def _fastnet_parts(model: nn.Module) -> tuple[FastNet, torch.Tensor, torch.Tensor]:
    net = getattr(model, "net", model)
    if not isinstance(net, FastNet):
        raise TypeError(f"init_whitening needs a fastnet model, got {type(net).__name__}")
    mean = getattr(model, "mean", torch.zeros(1))
    std = getattr(model, "std", torch.ones(1))
    return net, mean, std


@torch.no_grad()
def init_whitening(model: nn.Module, images: torch.Tensor, eps: float = 5e-4, max_images: int = 5000,
                   freeze: bool = True) -> torch.Tensor:
    """Set the first conv to whiten ``images``' patches (airbench94 / Page 2018) and return the eigenvalues.

    ``images``: N x C x H x W training images in [0, 255] (uint8 or float), normalised here the way the model
    does it. With the patch covariance Cov = V diag(l) V^T, the filters are the eigenvectors scaled by
    1/sqrt(l + eps), once with each sign (GELU follows, so +/- keeps both halves of every direction): the
    first half of the conv outputs then has covariance ~ identity, and the bias centres every output.
    ``freeze`` stops training the weights (the bias stays trainable)."""
    net, mean, std = _fastnet_parts(model)
    conv = net.whiten
    dev = conv.weight.device
    x = (images[:max_images].to(dev, torch.float32) - mean.to(dev)) / std.to(dev)
    c, (kh, kw) = x.shape[1], conv.kernel_size
    if c != conv.in_channels:
        raise ValueError(f"init_whitening: images have {c} channels, the model expects {conv.in_channels}")
    d = c * kh * kw
    total, outer, count = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0
    for chunk in x.split(500):  # accumulate sums per chunk: the whole patch matrix would be ~0.5 GB
        patches = chunk.unfold(2, kh, 1).unfold(3, kw, 1)  # n x C x H' x W' x kh x kw
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, d).double().cpu()
        total += patches.sum(0)
        outer += patches.T @ patches
        count += len(patches)
    patch_mean = total / count
    cov = outer / count - torch.outer(patch_mean, patch_mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # largest variance first
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)).T.reshape(-1, c, kh, kw)
    weight = torch.cat([filters, -filters])
    conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.bias.copy_(-(weight.reshape(len(weight), -1) @ patch_mean).to(conv.bias.dtype))  # centred outputs
    if freeze:
        conv.weight.requires_grad_(False)
    return eigenvalues.float()
