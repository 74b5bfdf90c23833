"""visionlab.models.tta: flip / multi-scale test-time augmentation of dense outputs, and segment's hook."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionlab.models.tta import DenseTTA, with_tta


class Columns(nn.Module):
    """Logits that depend on the column (so a mirror changes them) at the input's own size."""

    input_multiple = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[-2:]))
        b, _, h, w = x.shape
        col = torch.linspace(-2, 2, w).expand(b, 1, h, w)
        return torch.cat([col, -col, x[:, :1] / 255], 1)


def test_identity_when_nothing_to_augment():
    net = Columns()
    assert with_tta(net, [1.0], False) is net
    assert isinstance(with_tta(net, [1.0], True), DenseTTA)


def test_flip_averages_probabilities_of_the_mirrored_view_hand_computed():
    net = Columns()
    x = torch.rand(2, 3, 8, 12) * 255
    out = DenseTTA(net, (1.0,), flip=True)(x)
    logits = net(x)
    mirrored = net(x.flip(-1)).flip(-1)
    expected = ((logits.softmax(1) + mirrored.softmax(1)) / 2).log()
    torch.testing.assert_close(out, expected)
    # the column term is antisymmetric, so the two views cancel it: classes 0 and 1 tie everywhere
    torch.testing.assert_close(out[:, 0], out[:, 1])


def test_scales_are_rounded_to_the_multiple_and_outputs_come_back_to_input_size():
    net = Columns()
    out = DenseTTA(net, (1.0, 1.5), flip=False)(torch.rand(1, 3, 8, 12) * 255)
    assert out.shape == (1, 3, 8, 12)
    assert net.calls == [(8, 12), (12, 20)]  # 8*1.5 = 12, 12*1.5 = 18 -> 20 (multiple of 4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, 8, 12))  # log of a probability average


def test_bad_scales_rejected():
    with pytest.raises(ValueError, match="scales"):
        DenseTTA(Columns(), (), flip=True)
    with pytest.raises(ValueError, match="average"):
        DenseTTA(Columns(), (1.0,), flip=True, average="median")


def test_flip_averages_values_for_depth_hand_computed():
    net = Columns()
    x = torch.rand(2, 3, 8, 12) * 255
    out = DenseTTA(net, (1.0,), flip=True, average="values")(x)
    torch.testing.assert_close(out, (net(x) + net(x.flip(-1)).flip(-1)) / 2)
    torch.testing.assert_close(out[:, 0], torch.zeros(2, 8, 12))  # the antisymmetric column ramp cancels
    torch.testing.assert_close(out[:, 2], x[:, 0] / 255)  # a term that follows the image survives the round trip


def test_segment_val_with_tta_runs_and_config_rejects_bad_scales(tmp_path, monkeypatch):
    import visionlab
    from visionlab.cfg import ConfigError, build_config
    from visionlab.tasks.base import get_task

    task = get_task("segment")
    with pytest.raises((ConfigError, ValueError), match="tta_scales"):
        build_config(task.config_cls, "segment", {"tta_scales": [0.0]})
    run = visionlab.train("segment", data="synthetic", synthetic_train=4, synthetic_val=2, imgsz=64, epochs=1,
                          batch=2, project=str(tmp_path), name="r", mlflow=False, plots=False, workers=0)
    calls = []
    forward = DenseTTA.forward
    monkeypatch.setattr(DenseTTA, "forward", lambda self, x: calls.append(self.scales) or forward(self, x))
    visionlab.val("segment", model=str(run), project=str(tmp_path), plots=False, workers=0)
    assert calls == []  # the default: no augmentation
    tta = visionlab.val("segment", model=str(run), project=str(tmp_path), plots=False, workers=0,
                        tta_flip=True, tta_scales=[1.0, 1.5])
    assert calls and set(calls) == {(1.0, 1.5)}
    assert 0.0 <= tta["miou"] <= 1.0


def test_around_a_fixed_size_graph_tta_keeps_its_size_and_refuses_scales():
    """An ONNX file exported without dynamic H/W takes one size: DenseTTA says so (fixed_hw, which Task.infer
    reads to skip keep_aspect), flips at that size, and refuses extra scales with a clear message."""
    from visionlab.cfg import ConfigError

    net = Columns()
    net.fixed_hw = (8, 12)
    tta = DenseTTA(net, (1.0,), flip=True)
    assert tta.fixed_hw == (8, 12)
    assert tta(torch.rand(1, 3, 8, 12) * 255).shape == (1, 3, 8, 12) and net.calls == [(8, 12), (8, 12)]
    with pytest.raises(ConfigError, match=r"8x12 inputs only.*dynamic=true"):
        DenseTTA(net, (1.0, 1.25), flip=True)
    assert DenseTTA(Columns(), (1.0,)).fixed_hw is None
