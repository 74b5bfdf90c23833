"""Classification models: shapes, gradients, CIFAR stems, normalisation, whitening init, CIFAR ResNet weights."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from torch import nn

import visionlab.models.classify  # noqa: F401  (registers the classify models)
from visionlab.models.cifar_resnet import load_cifar_resnet_checkpoint
from visionlab.models.fastnet import init_whitening
from visionlab.models.registry import create_model, list_models
from visionlab.utils.checkpoint import CheckpointError

RGB_MODELS = ["fastnet", "resnet18", "mobilenetv3_small", "mobilenetv3_large", "shufflenetv2",
              "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56", "small_cnn"]
GREY_MODELS = ["mlp", "small_cnn", "fastnet", "cifar_resnet20"]
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread avoids OpenMP spin contention (measured
    3-10x faster here under load); restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _images(b: int, c: int, size: int) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(0)) * 255


def test_every_builder_is_registered_for_classify() -> None:
    assert set(RGB_MODELS + GREY_MODELS) <= set(list_models("classify"))


@pytest.mark.parametrize("name", RGB_MODELS)
def test_rgb_shapes_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=3)
    assert model.input_multiple == 1
    out = model(_images(2, 3, 32))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reaches {no_grad[:5]}"
    model.eval()
    with torch.no_grad():
        assert model(_images(1, 3, 32)).shape == (1, 7)  # batch 1 in eval mode


@pytest.mark.parametrize("name", GREY_MODELS)
def test_grey_28x28_shapes(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1)
    out = model(_images(2, 1, 28))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_mlp_and_small_cnn_regulariser_switches() -> None:
    plain = create_model("mlp", hidden=(32, 16))
    reg = create_model("mlp", hidden=(32, 16), dropout=0.5, batchnorm=True)
    kinds = [type(m).__name__ for m in reg.net]
    assert kinds == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU",
                     "Dropout", "Linear"]
    # 784*32 + 32 + 32*16 + 16 + 16*10 + 10 weights+biases without BN
    assert sum(p.numel() for p in plain.parameters()) == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    cnn = create_model("small_cnn", width=8, dropout=0.3, batchnorm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in cnn.modules()) == 3
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in cnn.modules())
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm2d)) for m in create_model("small_cnn").modules())


def test_normalisation_per_channel() -> None:
    grey = create_model("small_cnn")
    assert grey.mean.shape == (1, 1, 1, 1) and grey.mean.item() == pytest.approx(0.1307 * 255)
    assert grey.std.item() == pytest.approx(0.3081 * 255)
    rgb = create_model("cifar_resnet20")  # the ImageNet statistics its published weights were trained with
    assert torch.allclose(rgb.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]) * 255)
    seen = {}
    rgb.net.conv1.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    rgb.eval()(torch.full((1, 3, 4, 4), 0.485 * 255))
    assert seen["x"][0, 0].abs().max() < 1e-5  # (x - mean) / std on channel 0 is exactly 0


def test_cifar_stems_keep_spatial_detail() -> None:
    """At 32x32 input the last feature map is 4x4 (overall stride 8), not 1x1 as with ImageNet stems."""
    x = torch.zeros(1, 3, 32, 32)
    r = create_model("resnet18").net
    feats = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
    assert feats.shape[-2:] == (4, 4) and r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1)
    for name in ("mobilenetv3_small", "mobilenetv3_large"):
        assert create_model(name).net.features(x).shape[-2:] == (4, 4), name
    s = create_model("shufflenetv2").net
    assert s.conv5(s.stage4(s.stage3(s.stage2(s.maxpool(s.conv1(x)))))).shape[-2:] == (4, 4)


def test_cifar_resnet_param_counts_are_the_published_ones() -> None:
    counts = {d: sum(p.numel() for p in create_model(f"cifar_resnet{d}").parameters()) for d in (20, 32, 44, 56)}
    assert counts == {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018}


def test_init_whitening_whitens_patches() -> None:
    torch.manual_seed(0)
    model = create_model("fastnet", width=0.25)
    # strongly correlated channels and neighbours: a smooth grey image plus a little colour noise
    base = torch.rand(64, 1, 9, 9).repeat_interleave(4, 2).repeat_interleave(4, 3)[..., :32, :32]
    images = (base * 200 + torch.rand(64, 3, 32, 32) * 40).clamp(0, 255)
    eig = init_whitening(model, images, eps=1e-6)
    assert eig.shape == (12,) and (eig[:-1] >= eig[1:]).all()  # 3 channels x 2x2 patch, largest first
    assert not model.net.whiten.weight.requires_grad
    with torch.no_grad():
        out = model.net.whiten((images - model.mean) / model.std)  # the conv output before GELU
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    assert half.mean(0).abs().max() < 1e-3  # bias centres every output
    cov = half.T @ half / len(half)
    assert torch.allclose(cov, torch.eye(12), atol=2e-3)  # identity covariance: whitened
    assert torch.allclose(out[:, 12:], -out[:, :12], atol=1e-4)  # second half = negated filters


def test_fastnet_width_and_grey_whitening() -> None:
    assert create_model("fastnet", width=0.5).net.groups[2].conv2.out_channels == 128
    grey = create_model("fastnet", in_channels=1)
    assert grey.net.whiten.out_channels == 8
    assert init_whitening(grey, torch.rand(8, 1, 28, 28) * 255).shape == (4,)


# ----------------------------------------------------------------------------- CIFAR ResNet checkpoints


def test_checkpoint_errors_are_one_line(tmp_path: Path) -> None:
    wrong = tmp_path / "resnet18.th"
    torch.save({"state_dict": create_model("resnet18").net.state_dict()}, wrong)
    with pytest.raises(CheckpointError, match="resnet18.th: not a CIFAR ResNet state dict") as e:
        load_cifar_resnet_checkpoint(wrong)
    assert "\n" not in str(e.value)
    sd = {f"module.{k}": v for k, v in create_model("cifar_resnet20").net.state_dict().items()
          if not k.startswith("layer3.2.")}
    sd["module.extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.th"
    torch.save({"state_dict": sd, "best_prec1": 90.0}, partial)
    with pytest.raises(CheckpointError, match=r"missing keys layer3\.2\.bn1\.bias.*unexpected keys extra\.weight"):
        load_cifar_resnet_checkpoint(partial)
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.th: cannot read"):
        load_cifar_resnet_checkpoint(junk)


def test_roundtrip_of_a_generated_checkpoint(tmp_path: Path) -> None:
    src = create_model("cifar_resnet32", num_classes=5).net
    path = tmp_path / "r32.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    model = load_cifar_resnet_checkpoint(path)
    assert model.net.depth == 32 and model.net.linear.out_features == 5 and not model.training
    assert torch.equal(model.net.layer3[4].conv2.weight, src.layer3[4].conv2.weight)


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_shared_checkpoints_load_strictly(depth: int) -> None:
    path = next(shared_path("weights", "cifar10_resnet").glob(f"resnet{depth}-*.th"))
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = load_cifar_resnet_checkpoint(path)
    assert model.net.depth == depth
    ours = {k for k in model.net.state_dict() if not k.endswith("num_batches_tracked")}
    assert ours == {k.removeprefix("module.") for k in raw}  # identical keys after stripping 'module.'


def test_resnet20_accuracy_on_real_cifar10_jpegs() -> None:
    """Re-measured: 50 images per class of the JPEG test set; ~80% (SOURCE.md: 81.4% on 2000). Fails if
    normalisation, channel order (BGR gives ~72%) or weight mapping are wrong."""
    from visionlab.data.io import read_image_bytes

    archive = shared_path("data", "cifar10", "test.zip")
    weights = next(shared_path("weights", "cifar10_resnet").glob("resnet20-*.th"))
    names = [f"test/{c}/{i:04d}.jpg" for c in CIFAR_CLASSES for i in range(50)]
    with zipfile.ZipFile(archive) as z:
        images = np.stack([read_image_bytes(n, z.read(n)) for n in names])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    y = torch.arange(10).repeat_interleave(50)
    model = load_cifar_resnet_checkpoint(weights)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.75, f"resnet20 accuracy {acc:.3f} on 500 CIFAR-10 test JPEGs"
