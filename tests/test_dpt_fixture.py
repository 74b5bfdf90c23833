"""visionlab.models.dpt against the official Depth-Anything-V2 ViT-S (shared/fixtures/dav2_vits): the fixture
weight recipe, stored outputs of the official code, stage-by-stage intermediates, the image -> depth path.
Plus the project wrapper (dpt_vits) and official-checkpoint loading (visionlab.models.depth_weights)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import shared_path
from visionlab.models.depth_weights import load_depth_checkpoint_file, load_encoder_into
from visionlab.models.dpt import (
    DepthAnythingV2,
    DPTDepth,
    dpt_vits,
    image2tensor,
    infer_image,
    load_official_state_dict,
)
from visionlab.utils.checkpoint import CheckpointError

MAX_TOL, MEAN_TOL = 2e-4, 2e-5  # the fixture README's tolerances for CPU float32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the 2 cores are shared: one intra-op thread is faster than two under contention (4.9 s vs 8.3 s for
    # the 518x784 forward); the fixture measured 1 vs 2 threads at 4.8e-6 apart
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ the fixture's weight recipe


def fixture_value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """weight_recipe.md ("dav2-vits-fixture-v1"): one seeded N(0,1) draw per key, scaled by rule."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    r = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8"))))
    if key == "depth_head.scratch.output_conv2.2.bias":
        return 2.0 + r * 0.02
    if key.endswith(".weight") and len(shape) >= 2:
        return r * (1.0 / math.sqrt(math.prod(shape[1:])))
    if key.endswith(".weight") or key.endswith(".gamma"):
        return 1.0 + r * 0.02
    if key.endswith("running_var"):
        return (r * 0.02).abs() + 1.0
    if key.endswith(".bias") or key.endswith("running_mean"):
        return r * 0.02
    return r


def recipe_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: fixture_value(k, s) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    return shared_path("fixtures", "dav2_vits")


@pytest.fixture(scope="module")
def official_keys(fixture_dir: Path) -> list[dict]:
    return json.loads((fixture_dir / "keys_shapes.json").read_text())["keys"]


@pytest.fixture(scope="module")
def recipe_sd(official_keys: list[dict]) -> dict[str, torch.Tensor]:
    return recipe_state_dict({e["key"]: tuple(e["shape"]) for e in official_keys})


@pytest.fixture(scope="module")
def fixture_model(recipe_sd: dict[str, torch.Tensor]) -> DepthAnythingV2:
    model = DepthAnythingV2("vits").eval()
    model.load_state_dict(recipe_sd, strict=True)
    return model


def _close(ours: torch.Tensor | np.ndarray, ref: np.ndarray, max_tol: float = MAX_TOL, mean_tol: float | None = None,
           what: str = "") -> None:
    ours = ours.detach().numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    diff = np.abs(ours.astype(np.float64) - ref)
    assert diff.max() <= max_tol, f"{what}: max |diff| {diff.max():.3g} > {max_tol}"
    if mean_tol is not None:
        assert diff.mean() <= mean_tol, f"{what}: mean |diff| {diff.mean():.3g} > {mean_tol}"


# ------------------------------------------------------------------ official compatibility


def test_recipe_checksums_and_official_key_layout(official_keys: list[dict],
                                                  recipe_sd: dict[str, torch.Tensor]) -> None:
    model = DepthAnythingV2("vits")
    ours = model.state_dict()
    # same keys in the same order, same shapes: the official checkpoints load strictly
    assert list(ours) == [e["key"] for e in official_keys]
    assert all(tuple(ours[e["key"]].shape) == tuple(e["shape"]) for e in official_keys)
    assert sum(p.numel() for p in model.parameters()) == 24_785_089
    for e in official_keys:
        v = recipe_sd[e["key"]]
        assert v.flatten()[:4].tolist() == e["first4"], e["key"]  # exact
        assert v.double().sum().item() == pytest.approx(e["sum"], rel=1e-9, abs=1e-6), e["key"]
        assert v.double().abs().sum().item() == pytest.approx(e["abs_sum"], rel=1e-9), e["key"]


def test_stage_by_stage_small_non_square(fixture_model: DepthAnythingV2, fixture_dir: Path) -> None:
    ref = np.load(fixture_dir / "debug_small_randn_112x154.npz")
    x = torch.from_numpy(ref["input"])
    net = fixture_model
    captured: dict[str, torch.Tensor] = {}
    hooks = [getattr(net.depth_head.scratch, f"refinenet{i}").register_forward_hook(
        lambda _m, _i, out, name=f"path_{i}": captured.__setitem__(name, out)) for i in range(1, 5)]
    # output_conv2's ReLUs are in-place: clone the pre-ReLU tensor when it is produced
    hooks.append(net.depth_head.scratch.output_conv2[2].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("head_pre_relu", out.clone())))
    with torch.no_grad():
        _close(net.pretrained.prepare_tokens(x), ref["tokens_after_pos_embed"], what="tokens after pos-embed")
        feats = net.pretrained.get_intermediate_layers(x, [2, 5, 8, 11])
        for i, (patch, cls) in enumerate(feats):
            _close(patch, ref[f"feat{i}_patch_tokens"], what=f"feat{i} patch tokens")
            _close(cls, ref[f"feat{i}_cls_token"], what=f"feat{i} cls token")
        out = net(x)
    for h in hooks:
        h.remove()
    for name in ("path_4", "path_3", "path_2", "path_1", "head_pre_relu"):
        _close(captured[name], ref[name], what=name)
    _close(out, ref["output"], mean_tol=MEAN_TOL, what="output")


def test_forward_matches_official(fixture_model: DepthAnythingV2, fixture_dir: Path) -> None:
    for inp, out in (("input_randn_518.npy", "out_randn_518.npy"), ("photo_input_tensor.npy", "out_photo_forward.npy")):
        with torch.no_grad():
            ours = fixture_model(torch.from_numpy(np.load(fixture_dir / inp)))
        _close(ours, np.load(fixture_dir / out), mean_tol=MEAN_TOL, what=out)


def test_image_to_depth_matches_official(fixture_model: DepthAnythingV2, fixture_dir: Path) -> None:
    import cv2

    photo = shared_path("data", "photos", "depth_anything_v2", "demo08.jpg")
    bgr = cv2.imread(str(photo))  # what the official code reads
    rgb = np.ascontiguousarray(bgr[..., ::-1])  # what visionlab reads
    tensor, (h, w) = image2tensor(rgb, 518)
    assert (h, w) == (425, 640) and tensor.dtype == torch.float32
    _close(tensor, np.load(fixture_dir / "photo_input_tensor.npy"), what="image2tensor")  # [1,3,518,784]
    _close(image2tensor(bgr, 518, bgr=True)[0], tensor.numpy(), max_tol=0.0, what="bgr=True")
    ref = np.load(fixture_dir / "out_photo_infer_image.npy")
    _close(infer_image(fixture_model, rgb, 518), ref, mean_tol=MEAN_TOL, what="infer_image")
    # the project wrapper gives the same map (it runs its inner official model on the official preprocessing)
    wrapper = DPTDepth("vits").eval()
    load_official_state_dict(wrapper, fixture_model.state_dict())
    small = infer_image(fixture_model, rgb, 56)
    assert small.shape == (425, 640) and small.dtype == np.float32
    _close(infer_image(wrapper, rgb, 56), small, max_tol=0.0, what="infer_image(wrapper)")


# ------------------------------------------------------------------ the project wrapper (no shared data needed)


def _random_official_sd(encoder: str = "vits", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return DepthAnythingV2(encoder).state_dict()


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    return _random_official_sd("vits")


def test_wrapper_normalises_itself(official_sd: dict[str, torch.Tensor]) -> None:
    wrapper = dpt_vits().eval()
    load_official_state_dict(wrapper, official_sd)
    assert wrapper.input_multiple == 14 and wrapper.encoder is wrapper.net.pretrained
    rgb = torch.rand(2, 3, 56, 70) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = wrapper(rgb)
        ref = wrapper.net((rgb / 255 - mean) / std)
    assert out.shape == (2, 1, 56, 70) and (out >= 0).all()
    torch.testing.assert_close(out[:, 0], ref, atol=2e-5, rtol=1e-5)


def test_wrapper_features_and_no_weight_decay() -> None:
    wrapper = dpt_vits()
    feats = wrapper.features(torch.rand(1, 3, 42, 56) * 255)
    assert [tuple(f.shape) for f in feats] == [(1, 384, 3, 4)] * 4
    # after the final LayerNorm (weight 1, bias 0 at init): each token has mean 0, variance 1 over channels
    torch.testing.assert_close(feats[0].mean(1), torch.zeros(1, 3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats[3].var(1, unbiased=False), torch.ones(1, 3, 4), atol=1e-3, rtol=0)
    names = dict(wrapper.named_parameters())
    nwd = wrapper.no_weight_decay()
    assert len(nwd) == 3 and all(n in names for n in nwd)
    assert {names[n].shape[-1] for n in nwd} == {384}
    with pytest.raises(ValueError, match="multiple of 14"):
        wrapper(torch.zeros(1, 3, 50, 56))


def test_load_depth_checkpoint_round_trip(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    x = torch.rand(1, 3, 28, 42) * 255
    ref_model = DPTDepth("vits").eval()
    load_official_state_dict(ref_model, official_sd)
    with torch.no_grad():
        ref = ref_model(x)
    pth = tmp_path / "depth_anything_v2_vits.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official_sd.items()}}, pth)  # wrapped + DDP prefix
    st = tmp_path / "depth_anything_v2_vits.safetensors"
    save_file({k: v.contiguous() for k, v in official_sd.items()}, str(st))
    for path in (pth, st):
        model, info = load_depth_checkpoint_file(path)
        assert isinstance(model, DPTDepth) and info["encoder"] == "vits" and info["model"] == "dpt_vits"
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), ref, atol=0, rtol=0)


def test_load_depth_checkpoint_errors(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    bad = dict(official_sd)
    del bad["depth_head.scratch.output_conv1.bias"]
    bad["depth_head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "wrong.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as e:
        load_depth_checkpoint_file(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "1 missing" in msg and "depth_head.scratch.output_conv1.bias" in msg
    assert "1 unexpected" in msg and "depth_head.extra.weight" in msg

    shapes = dict(official_sd)
    shapes["depth_head.projects.0.weight"] = torch.zeros(47, 384, 1, 1)
    torch.save(shapes, path)
    with pytest.raises(CheckpointError, match=r"shape.*depth_head\.projects\.0\.weight"):
        load_depth_checkpoint_file(path)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth") as e:
        load_depth_checkpoint_file(garbage)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_depth_checkpoint_file(tmp_path / "absent.pth")


def test_load_encoder_into(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    import timm

    encoder_sd = {k[len("pretrained."):]: v for k, v in official_sd.items() if k.startswith("pretrained.")}
    model = dpt_vits()
    head_before = model.net.depth_head.projects[0].weight.clone()
    # facebookresearch dinov2 layout, with a 'backbone.' prefix
    torch.save({f"backbone.{k}": v for k, v in encoder_sd.items()}, tmp_path / "dinov2_vits14.pth")
    info = load_encoder_into(model, tmp_path / "dinov2_vits14.pth")
    assert info["loaded"] == len(encoder_sd) and info["missing"] == []
    for k, v in encoder_sd.items():
        assert torch.equal(model.encoder.state_dict()[k], v), k
    assert torch.equal(model.net.depth_head.projects[0].weight, head_before)  # head untouched

    # timm vit_small_patch14_dinov2 names (built here, randomly initialised: nothing is downloaded)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "timm.safetensors"))
    info = load_encoder_into(model, tmp_path / "timm.safetensors")
    assert info["missing"] == ["mask_token"]
    torch.testing.assert_close(model.encoder.blocks[3].ls2.gamma, vit.blocks[3].ls2.gamma, atol=0, rtol=0)
    torch.testing.assert_close(model.encoder.pos_embed, vit.pos_embed, atol=0, rtol=0)

    # a file covering < 90% of the encoder is refused
    torch.save({k: v for k, v in encoder_sd.items() if not k.startswith("blocks.1")}, tmp_path / "part.pth")
    with pytest.raises(CheckpointError, match="part.pth.*encoder"):
        load_encoder_into(model, tmp_path / "part.pth")


def test_official_checkpoint_predicts_at_its_aspect_ratio(fixture_model: DepthAnythingV2, fixture_dir: Path,
                                                           tmp_path: Path) -> None:
    """predict / pseudo-label of an official checkpoint keep the photo's aspect ratio (518 x 784 for 425 x 640,
    as infer_image): much closer to the official map than stretching the photo to 518 x 518."""
    import cv2

    from visionlab.engine.evaluator import eval_config
    from visionlab.tasks.base import get_task

    task = get_task("depth")
    ckpt = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(fixture_model.state_dict(), ckpt)
    cfg = eval_config(task, {"model": str(ckpt), "source": str(tmp_path)}, "predict")
    assert cfg.keep_aspect and tuple(cfg.imgsz) == (518, 518)
    assert not eval_config(task, {"model": str(ckpt), "keep_aspect": False}, "predict").keep_aspect  # user wins
    wrapper = DPTDepth("vits").eval()
    load_official_state_dict(wrapper, fixture_model.state_dict())
    seen: list[tuple[int, ...]] = []
    hook = wrapper.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    rgb = np.ascontiguousarray(cv2.imread(str(shared_path("data", "photos", "depth_anything_v2", "demo08.jpg")))[..., ::-1])
    ref = np.load(fixture_dir / "out_photo_infer_image.npy")
    kept = task.infer(wrapper, [rgb], (518, 518), keep_aspect=True)[0]
    stretched = task.infer(wrapper, [rgb], (518, 518))[0]
    hook.remove()
    assert seen == [(1, 3, 518, 784), (1, 3, 518, 518)]
    assert kept.shape == stretched.shape == ref.shape
    err_kept, err_stretched = np.abs(kept - ref).mean(), np.abs(stretched - ref).mean()
    # what is left is the resize (uint8 area/bilinear vs the official float64 bicubic), not the geometry
    assert err_kept < 0.5 * err_stretched, (err_kept, err_stretched)


def test_official_checkpoint_is_recognised_without_naming_the_task(tmp_path: Path,
                                                                  official_sd: dict[str, torch.Tensor]) -> None:
    """export / bench look up the task of model= themselves: an official release's file is depth's."""
    from visionlab.engine.model_io import read_any_model_meta

    pth = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(official_sd, pth)
    meta = read_any_model_meta(pth)
    assert meta["task"] == "depth" and meta["arch"] == "dpt_vits"
    with pytest.raises(CheckpointError, match="not a visionlab checkpoint"):
        (tmp_path / "junk.pth").write_bytes(b"junk")
        read_any_model_meta(tmp_path / "junk.pth")
