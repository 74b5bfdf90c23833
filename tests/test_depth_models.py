"""Depth models: the CNN students (visionlab.models.depth_cnn) and the DPT models at tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch

from visionlab.cfg import ConfigError
from visionlab.models import depth_cnn as _cnn  # noqa: F401  (registers the models)
from visionlab.models import dpt as _dpt  # noqa: F401
from visionlab.models.pretrained import efficientnet_lite_imagenet_state_dict, load_encoder_weights
from visionlab.models.registry import create_model, list_models


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 cores are shared: one thread is faster under contention
    yield
    torch.set_num_threads(before)


def test_registered() -> None:
    assert {"dpt_vits", "dpt_vitb", "dpt_vitl", "depth_cnn", "depth_efficientnet_lite0", "depth_efficientnet_lite1",
            "depth_efficientnet_lite2"} <= set(list_models("depth"))


@pytest.mark.parametrize("name,kwargs", [("depth_cnn", {"encoder": "resnet18"}), ("depth_efficientnet_lite0", {}),
                                         ("depth_efficientnet_lite2", {})])
def test_cnn_depth_contract(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    assert model.input_multiple == 32
    assert model.encoder.model.feature_info.reduction()[-1] == 32
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 1, 64, 96) and out.dtype == torch.float32
    assert (out >= 0).all() and out.std() > 0
    # hand-computed: a head that ignores its input and has bias b outputs softplus(b) = log(1 + e^b) everywhere
    last = model.net.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-1.5)
        const = model(x)
    torch.testing.assert_close(const, torch.full_like(const, math.log1p(math.exp(-1.5))))


def test_cnn_normalises_its_input() -> None:
    # tf_ encoders expect [-1, 1]: RGB 127.5 must reach the network as exactly 0
    model = create_model("depth_efficientnet_lite0").eval()
    with torch.no_grad():
        out = model(torch.full((1, 3, 64, 64), 127.5))
        ref = model.net(torch.zeros(1, 3, 64, 64))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # ImageNet statistics for other encoders: RGB 255*mean is 0
    model = create_model("depth_cnn", encoder="resnet18").eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        out, ref = model(mean.expand(1, 3, 64, 64)), model.net(torch.zeros(1, 3, 64, 64))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_cnn_gradients_reach_encoder() -> None:
    torch.manual_seed(0)
    model = create_model("depth_cnn", encoder="resnet18").train()
    out = model(torch.rand(2, 3, 64, 96) * 255)
    loss = (out - torch.rand_like(out)).abs().mean()
    loss.backward()
    stem = model.encoder.model.conv1.weight.grad  # the very first encoder layer
    assert stem is not None and stem.abs().sum() > 0
    assert all(p.grad is not None for p in model.net.laterals.parameters())


def test_efficientnet_lite0_imagenet_weights_load() -> None:
    model = create_model("depth_efficientnet_lite0")
    report = load_encoder_weights(model, "imagenet")
    assert "note" not in report  # tf_ variant: TF 'SAME' padding, the weights load exactly
    assert report["missing"] == [] and report["loaded"] == len(model.encoder.model.state_dict())
    ref = efficientnet_lite_imagenet_state_dict("lite0", bn_eps=1e-3)
    enc = model.encoder.model.state_dict()
    for key in ("conv_stem.weight", "blocks.6.0.conv_pwl.weight", "blocks.3.2.bn2.running_var"):
        assert torch.equal(enc[key], ref[key]), key


def test_unknown_encoder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'no_such_net'") as e:
        create_model("depth_cnn", encoder="no_such_net")
    assert "\n" not in str(e.value)


def test_dpt_vits_tiny_input() -> None:
    torch.manual_seed(0)
    model = create_model("dpt_vits").train()
    assert model.input_multiple == 14
    out = model(torch.rand(1, 3, 56, 70) * 255)
    assert out.shape == (1, 1, 56, 70) and (out >= 0).all()
    feats = model.features(torch.rand(1, 3, 56, 70) * 255)
    assert [tuple(f.shape) for f in feats] == [(1, 384, 4, 5)] * 4
    # the random head's final ReLUs may zero the output: push the gradient through features instead
    sum(f.square().mean() for f in feats).backward()
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_decoder_width_key() -> None:
    from visionlab.cfg import build_config
    from visionlab.tasks.base import get_task

    task = get_task("depth")
    cfg = build_config(task.config_cls, "depth", {"model": "depth_efficientnet_lite0", "decoder_width": 16})
    name, kwargs = task.model_spec(cfg)
    assert (name, kwargs) == ("depth_efficientnet_lite0", {"width": 16})
    model = create_model(name, **kwargs)
    assert all(lat.out_channels == 16 for lat in model.net.laterals)
    cfg = build_config(task.config_cls, "depth", {"model": "depth_cnn", "encoder": "resnet18", "decoder_width": 32})
    assert task.model_spec(cfg) == ("depth_cnn", {"encoder": "resnet18", "width": 32})
    assert task.model_spec(build_config(task.config_cls, "depth", {}))[1] == {}  # default: the model's own 64
    with pytest.raises(ConfigError, match="decoder_width=64 applies to the CNN depth models"):
        task.model_spec(build_config(task.config_cls, "depth", {"model": "dpt_vits", "decoder_width": 64}))
    with pytest.raises(ConfigError, match="decoder_width"):
        build_config(task.config_cls, "depth", {"decoder_width": 4})
