"""The depth task end to end through the CLI (train -> val -> predict -> pseudo-label -> student, official
checkpoints, features, compare, overfit) plus its hand-checkable helpers. Tiny: 64 px synthetic scenes."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import png, run_cli, shared_path
from visionlab.tasks.depth import (
    _LossOnBatch,
    colorize_disparity,
    read_disparity_png16,
    save_disparity_png16,
)
from visionlab.tasks.depth_modes import pca_rgb

TINY = ["imgsz=64", "synthetic_train=8", "synthetic_val=4", "batch=4", "workers=0", "mlflow=false", "threads=1"]


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch depth_efficientnet_lite0 run on synthetic scenes (the teacher of the tests below)."""
    project = tmp_path_factory.mktemp("depth_runs")
    code, out = run_cli("depth", "train", *TINY, "epochs=2", f"project={project}", "name=tiny")
    assert code == 0, out
    return project / "tiny"


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Depth-Anything-V2 ViT-S state dict with the official key names, saved as the release's .pth."""
    from visionlab.models.dpt import DepthAnythingV2

    torch.manual_seed(0)
    state = DepthAnythingV2("vits").state_dict()
    state["depth_head.scratch.output_conv2.2.bias"].fill_(2.0)  # a positive output despite the final ReLUs
    path = tmp_path_factory.mktemp("official") / "depth_anything_v2_vits.pth"
    torch.save(state, path)
    return path


def _images(folder: Path, n: int, size: tuple[int, int] = (60, 80)) -> list[Path]:
    from visionlab.data.synthetic import render_scene

    return [png(folder / f"img{i}.png", render_scene(100 + i, *size).image) for i in range(n)]


# ------------------------------------------------------------------ helpers, hand-computed


def test_png16_roundtrip_hand_values(tmp_path: Path) -> None:
    d = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
    scale = save_disparity_png16(tmp_path / "d.png", d)
    assert scale == pytest.approx(4.0 / 65535)
    assert np.asarray(Image.open(tmp_path / "d.png")).tolist() == [[0, 16384], [32768, 65535]]  # round(v / scale)
    back = read_disparity_png16(tmp_path / "d.png")
    assert back.dtype == np.float32 and np.abs(back - d).max() <= scale / 2 + 1e-7


def test_colorize_uses_min_max_and_blacks_out_invalid() -> None:
    from matplotlib import colormaps

    d = np.array([[1.0, 2.0, 3.0]])
    out = colorize_disparity(d, "viridis", valid=np.array([[True, True, False]]))
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert out[0, 0].tolist() == lut[0].tolist() and out[0, 1].tolist() == lut[255].tolist()  # 1..2 spans the map
    assert out[0, 2].tolist() == [0, 0, 0]


def test_pca_rgb_first_component_follows_the_dominant_direction() -> None:
    h, w = 4, 6
    x = torch.arange(w, dtype=torch.float64).expand(h, w)
    feats = torch.stack([10 * x, torch.zeros(h, w), 0.1 * torch.rand(h, w, generator=torch.Generator().manual_seed(0))])
    rgb = pca_rgb(feats)
    red = rgb[0, :, 0].astype(int)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert (np.diff(red) > 0).all() or (np.diff(red) < 0).all()  # monotonic along x (sign of a PC is arbitrary)
    assert (rgb[:, :, 0] == rgb[0, :, 0]).all()  # and constant along y


def test_distillation_term_is_zero_for_an_affine_teacher() -> None:
    from visionlab.losses.depth import DepthLoss

    torch.manual_seed(0)
    out = torch.rand(2, 1, 16, 16) + 0.1
    batch = {"target": torch.rand(2, 1, 16, 16) + 0.5, "valid": torch.ones(2, 1, 16, 16, dtype=torch.bool),
             "space": torch.tensor([0, 0])}
    loss = _LossOnBatch(DepthLoss(trim=0.0), distill_weight=1.0)
    base = loss(out, batch)
    assert float(loss(out, {**batch, "teacher": 3 * out + 0.5})) == pytest.approx(float(base), abs=1e-5)
    assert float(loss(out, {**batch, "teacher": torch.rand(2, 1, 16, 16)})) > float(base) + 0.05


def test_serving_hooks_hand_values() -> None:
    import io

    from matplotlib import colormaps

    from visionlab.tasks.base import get_task

    task = get_task("depth")
    body, media = task.encode_response(np.array([[0.0, 1.0], [2.0, 4.0]], np.float32), None, "png16", {}, {})
    img = Image.open(io.BytesIO(body))
    assert media == "image/png" and np.asarray(img).tolist() == [[0, 16384], [32768, 65535]]
    assert float(img.text["disparity_scale"]) == pytest.approx(4 / 65535)
    info = task.encode_response(np.array([[1.0, 3.0]], np.float32), None, "json", {}, {"overlay": True})
    assert info["disparity"] == {"min": 1.0, "max": 3.0, "mean": 2.0} and "disparity" in info["images"]
    # depth 1, 2, (invalid), 4 m -> disparity 1, 0.5, -, 0.25 -> colormap positions 255, 85, black, 0
    sample = {"target": torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), "valid": torch.tensor([[[True, True], [False, True]]]),
              "space": 0}
    pic = task.target_picture(sample)
    lut = (colormaps["Spectral_r"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert pic[0, 0].tolist() == lut[255].tolist() and pic[0, 1].tolist() == lut[85].tolist()
    assert pic[1, 0].tolist() == [0, 0, 0] and pic[1, 1].tolist() == lut[0].tolist()


# ------------------------------------------------------------------ train, val, predict


def test_run_folder_and_metrics(depth_run: Path) -> None:
    for name in ("config.yaml", "metrics.csv", "results.json", "curves.png", "best_worst.png",
                 "weights/best.safetensors", "weights/last.safetensors"):
        assert (depth_run / name).is_file(), name
    rows = list(csv.DictReader(open(depth_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train/loss", "absrel", "delta1", "absrel_ci_low", "synthetic/absrel"} <= set(rows[0])
    res = json.loads((depth_run / "results.json").read_text())
    assert res["fitness_key"] == "absrel" and res["fitness_mode"] == "min"
    val = res["val"]
    assert 0 < val["absrel"] < 5 and 0 <= val["delta1"] <= 1 and val["images"] == 4
    assert val["absrel_ci_low"] <= val["absrel"] <= val["absrel_ci_high"]
    # best = the epoch with the lowest AbsRel
    assert res["best_epoch"] == int(min(rows, key=lambda r: float(r["absrel"]))["epoch"])


def test_val_inherits_data_and_protocol_from_checkpoint(depth_run: Path, tmp_path: Path) -> None:
    code, out = run_cli("depth", "val", f"model={depth_run}", "workers=0", "threads=1", f"project={tmp_path}")
    assert code == 0, out
    saved = json.loads(next(tmp_path.glob("*/metrics.json")).read_text())
    trained = json.loads((depth_run / "results.json").read_text())["val"]
    assert saved["data"] == "synthetic" and saved["images"] == 4  # synthetic_val=4 came from the checkpoint
    assert saved["absrel"] == pytest.approx(trained["absrel"], abs=1e-6)
    assert (next(tmp_path.glob("*")) / "best_worst.png").is_file()


def test_predict_writes_colour_and_raw_that_round_trip(depth_run: Path, tmp_path: Path) -> None:
    import visionlab
    from visionlab.tasks.base import get_task

    src = tmp_path / "src"
    paths = _images(src, 2, (60, 80))
    code, out = run_cli("depth", "predict", f"model={depth_run}", f"source={src}", f"project={tmp_path}",
                        "name=pred", "save_raw=both", "colormap=turbo", "workers=0", "threads=1")
    assert code == 0, out
    model, meta = visionlab.load_model(str(depth_run))
    image = np.asarray(Image.open(paths[0]))
    expected = get_task("depth").infer(model, [image], tuple(meta["imgsz"]))[0]
    assert expected.shape == (60, 80) and expected.dtype == np.float32
    raw = read_disparity_png16(tmp_path / "pred" / "raw" / "img0.png")
    assert np.abs(raw - expected).max() <= expected.max() / 65535 / 2 + 1e-6
    np.testing.assert_allclose(np.load(tmp_path / "pred" / "raw" / "img0.npy"), expected, rtol=1e-5, atol=1e-6)
    colour = np.asarray(Image.open(tmp_path / "pred" / "colour" / "img0.png"))
    # the same map through the same LUT; a value on a LUT bin edge may land one bin over (float rounding of
    # the CLI's and this process's forward passes differ slightly), which moves a colour by a few levels
    diff = np.abs(colour.astype(int) - colorize_disparity(expected, "turbo").astype(int)).max(-1)
    assert (diff > 0).mean() < 0.005 and diff.max() <= 12, (diff > 0).sum()
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["images"] == 2 and summary["disparity"]["max"] >= summary["disparity"]["min"] >= 0


def test_predict_on_a_depth_folder_reads_only_its_rgb_images(depth_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    png(root / "a_rgb.png", np.zeros((40, 48, 3), np.uint8))
    png(root / "a_depth.png", np.full((40, 48), 1000, np.uint16))  # a 16-bit depth PNG is not an input image
    code, out = run_cli("depth", "predict", f"model={depth_run}", f"source={root}", f"project={tmp_path}",
                        "name=pred", "workers=0", "threads=1")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "pred" / "colour").iterdir()) == ["a_rgb.png"]

    # an image without depth, a hidden macOS preview: still a depth dataset, its depth maps never predicted on
    png(root / "b_rgb.png", np.zeros((40, 48, 3), np.uint8))
    png(root / "._a_rgb.png", np.zeros((8, 8, 3), np.uint8))
    code, out = run_cli("depth", "predict", f"model={depth_run}", f"source={root}", f"project={tmp_path}",
                        "name=pred_b", "workers=0", "threads=1")
    assert code == 0, out
    assert "depth" not in " ".join(p.name for p in (tmp_path / "pred_b" / "colour").iterdir()), out

    # photos where one .jpg has a .png namesake are not a depth dataset: every image is predicted on
    photos = tmp_path / "photos"
    for name in ("p1.jpg", "p1.png", "p2.jpg"):
        png(photos / name, np.full((40, 48, 3), 90, np.uint8))
    code, out = run_cli("depth", "predict", f"model={depth_run}", f"source={photos}", f"project={tmp_path}",
                        "name=pred2", "workers=0", "threads=1")
    assert code == 0, out
    assert len(list((tmp_path / "pred2" / "colour").iterdir())) == 3, out


def test_skipped_pairs_are_one_warning_line(depth_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for name, depth_rows in (("a", 40), ("b", 30)):  # b: depth 48x30 against a 48x40 image
        png(root / f"{name}_rgb.png", np.zeros((40, 48, 3), np.uint8))
        png(root / f"{name}_depth.png", np.full((depth_rows, 48), 1000, np.uint16))
    code, out = run_cli("depth", "val", f"model={depth_run}", f"data={root}", "depth_scale=1000",
                        f"project={tmp_path}", "plots=false", "workers=0", "threads=1")
    assert code == 0, out
    assert "warning: 1 depth file(s) skipped" in out and "b_depth.png" in out and "UserWarning" not in out, out


def test_bad_settings_give_one_line(tmp_path: Path) -> None:
    for args, expected in (("align=best", "align"), ("colormap=jet", "colormap"), ("trim=1.5", "trim"),
                           ("encoder=resnet18", "depth_cnn"), ("lr=-1", "lr must be >= 0"),
                           ("weight_decay=-0.1", "weight_decay"), ("min_depth=5 max_depth=1", "above min_depth"),
                           ("model=unet_mini", "a segment model, not a depth one"), ("imgsz=[60,96]", "multiples"),
                           ("model=fastnet", "a classify model, not a depth one"), ("blur_noise=2", "blur_noise"),
                           ("teacher=/nonexistent/teacher.pth", "not found")):
        code, out = run_cli("depth", "train", *TINY, f"project={tmp_path}", *args.split())
        assert code == 2 and expected in out and "Traceback" not in out, out
    assert not any(tmp_path.iterdir())  # refused before a run folder was made: the name stays free


# ------------------------------------------------------------------ pseudo labels -> student


def test_pseudo_label_resumes_and_trains_a_student(depth_run: Path, tmp_path: Path) -> None:
    from visionlab.engine.model_io import resolve_weights
    from visionlab.tasks.depth_modes import file_sha256

    src = tmp_path / "unlabeled"
    _images(src, 5, (48, 72))
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    args = ("depth", "pseudo-label", f"model={depth_run}", f"source={src}", f"project={tmp_path}", "name=pl",
            "batch=2", "workers=0", "threads=1")
    code, out = run_cli(*args)
    assert code == 0, out
    pl = tmp_path / "pl"
    manifest = json.loads((pl / "manifest.json").read_text())
    assert [it["name"] for it in manifest["items"]] == [f"img{i}" for i in range(5)]
    assert manifest["counts"] == {"images": 6, "labelled": 5, "reused": 0, "computed": 5, "skipped": 1}
    assert "broken.jpg" in manifest["skipped"][0]
    assert manifest["teacher_sha256"] == file_sha256(resolve_weights(str(depth_run)))
    import visionlab
    from visionlab.tasks.base import get_task

    model, meta = visionlab.load_model(str(depth_run))
    teacher = get_task("depth").infer(model, [np.asarray(Image.open(src / "img2.png"))], tuple(meta["imgsz"]))[0]
    label = read_disparity_png16(pl / "labels" / "img2.png")
    assert label.shape == (48, 72)  # native image size, the teacher's disparity up to uint16 rounding
    assert np.abs(label - teacher).max() <= manifest["items"][2]["scale"] / 2 + 1e-6
    stored = np.asarray(Image.open(pl / "labels" / "img2.png")).astype(np.float64) * manifest["items"][2]["scale"]
    np.testing.assert_allclose(label, stored, rtol=1e-6)  # the manifest's scale and the PNG's own agree

    # kill simulation: the last periodic manifest lists 3 of the labels (img4's label came after it) and img3's
    # label is gone (killed while writing it); a restart recomputes only that label
    partial = {k: v for k, v in manifest.items() if k not in ("counts", "skipped")}
    partial.update(complete=False, items=[it for it in manifest["items"] if it["name"] not in ("img3", "img4")])
    (pl / "manifest.json").write_text(json.dumps(partial))
    (pl / "labels" / "img3.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (pl / "labels").iterdir()}
    code, out = run_cli(*args)
    assert code == 0, out
    manifest = json.loads((pl / "manifest.json").read_text())
    assert manifest["counts"]["computed"] == 1 and manifest["counts"]["reused"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in (pl / "labels").iterdir() if p.name != "img3.png"} == before
    assert (pl / "labels" / "img3.png").is_file()

    # other settings on the same folder: refused in one line, nothing reused under the wrong manifest or lost
    before = {p.name: p.stat().st_mtime_ns for p in (pl / "labels").iterdir()}
    manifest_before = (pl / "manifest.json").read_text()
    code, out = run_cli(*args, "tta_flip=true")
    assert code == 2 and "tta_flip=False, not tta_flip=True" in out and "Traceback" not in out, out
    assert {p.name: p.stat().st_mtime_ns for p in (pl / "labels").iterdir()} == before
    assert (pl / "manifest.json").read_text() == manifest_before
    # labels with no manifest at all (deleted): nothing says which teacher made them -> refused, nothing touched
    (pl / "manifest.json").rename(pl / "manifest.json.bak")
    code, out = run_cli(*args)
    assert code == 2 and "no manifest.json" in out, out
    assert {p.name: p.stat().st_mtime_ns for p in (pl / "labels").iterdir()} == before
    (pl / "manifest.json.bak").rename(pl / "manifest.json")

    # the folder is a dataset: a student trains on it (every 20th image is its val split)
    code, out = run_cli("depth", "train", *TINY, "epochs=1", f"data={pl}", f"project={tmp_path}", "name=student",
                        "plots=false")
    assert code == 0, out
    res = json.loads((tmp_path / "student" / "results.json").read_text())
    assert res["data"] == str(pl) and res["val"]["images"] == 1 and math.isfinite(res["val"]["absrel"])


def _pseudo_label_one(depth_run: Path, tmp_path: Path, size: tuple[int, int], setting: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """pseudo-label one generated image with ``setting``: (manifest, the image, its decoded label)."""
    src = tmp_path / "unlabeled"
    _images(src, 1, size)
    code, out = run_cli("depth", "pseudo-label", f"model={depth_run}", f"source={src}", f"project={tmp_path}",
                        "name=pl", setting, "workers=0", "threads=1")
    assert code == 0, out
    manifest = json.loads((tmp_path / "pl" / "manifest.json").read_text())
    label = read_disparity_png16(tmp_path / "pl" / "labels" / "img0.png")
    return manifest, np.asarray(Image.open(src / "img0.png")), label


def test_pseudo_label_keep_aspect(depth_run: Path, tmp_path: Path) -> None:
    import visionlab
    from visionlab.tasks.base import get_task

    # 1:2, against the teacher's square-ish training size
    manifest, image, label = _pseudo_label_one(depth_run, tmp_path, (48, 96), "keep_aspect=true")
    assert manifest["keep_aspect"] is True
    model, meta = visionlab.load_model(str(depth_run))
    kept, stretched = (get_task("depth").infer(model, [image], tuple(meta["imgsz"]), keep_aspect=k)[0] for k in (True, False))
    scale = manifest["items"][0]["scale"]
    assert np.abs(label - kept).max() <= scale / 2 + 1e-6 and np.abs(label - stretched).max() > scale


def test_pseudo_label_and_val_with_flip_tta(depth_run: Path, tmp_path: Path) -> None:
    import visionlab
    from visionlab.tasks.base import get_task

    manifest, image, label = _pseudo_label_one(depth_run, tmp_path, (48, 64), "tta_flip=true")
    assert manifest["tta_flip"] is True
    model, meta = visionlab.load_model(str(depth_run))
    task, size = get_task("depth"), tuple(meta["imgsz"])
    plain, mirrored = task.infer(model, [image], size)[0], task.infer(model, [image[:, ::-1].copy()], size)[0]
    scale = manifest["items"][0]["scale"]
    assert np.abs(label - (plain + mirrored[:, ::-1]) / 2).max() <= scale / 2 + 1e-5
    assert np.abs(label - plain).max() > scale  # the mirrored view changed the label
    tta = visionlab.val("depth", model=str(depth_run), project=str(tmp_path), plots=False, workers=0, tta_flip=True)
    assert math.isfinite(tta["absrel"])


# ------------------------------------------------------------------ official checkpoints, features


def test_official_checkpoint_predicts(official_pth: Path, tmp_path: Path) -> None:
    from visionlab.engine.model_io import read_model_meta
    from visionlab.models.dpt import DepthAnythingV2
    from visionlab.tasks.base import get_task

    task = get_task("depth")
    meta = read_model_meta(official_pth, task)
    assert meta["arch"] == "dpt_vits" and meta["imgsz"] == [518, 518] and meta["config"]["imgsz"] == [518, 518]
    src = _images(tmp_path / "src", 1, (42, 56))[0]
    code, out = run_cli("depth", "predict", f"model={official_pth}", f"source={src}", "imgsz=56",
                        f"project={tmp_path}", "name=pred", "save_raw=npy", "threads=1")
    assert code == 0, out
    # the same numbers as the official module fed the same normalised input: 56x70, the 42x56 image's aspect
    # ratio kept (shorter side 56, a multiple of 14), as an official checkpoint's predict does by default
    net = DepthAnythingV2("vits").eval()
    net.load_state_dict(torch.load(official_pth, weights_only=True))
    from visionlab.data.transforms import aspect_size, resize_image

    assert aspect_size(42, 56, 56, 14) == (56, 70)
    x = torch.from_numpy(resize_image(np.asarray(Image.open(src)), (56, 70))).permute(2, 0, 1)[None].float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(net((x - mean) / std)[:, None], (42, 56), mode="bilinear",
                                              align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "pred" / "raw" / f"{src.stem}.npy"), ref, rtol=1e-4, atol=1e-4)


def test_official_checkpoint_is_served_at_its_aspect_ratio(official_pth: Path) -> None:
    from visionlab.serve.models import load_served_model

    served = load_served_model("dav2", str(official_pth))
    assert served.keep_aspect and served.info()["keep_aspect"] and served.imgsz == (518, 518)
    shapes: list[tuple[int, ...]] = []
    hook = served.model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    out = served.infer([np.zeros((42, 56, 3), np.uint8), np.zeros((56, 42, 3), np.uint8)])
    hook.remove()
    assert sorted(shapes) == [(1, 3, 518, 686), (1, 3, 686, 518)]  # 518 x 690.7 -> nearest multiple of 14
    assert [o.shape for o in out] == [(42, 56), (56, 42)]


def test_wrong_architecture_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "other.pth"
    torch.save({"pretrained.patch_embed.proj.weight": torch.zeros(384, 3, 14, 14), "fc.weight": torch.zeros(2, 2)}, bad)
    src = _images(tmp_path / "src", 1)[0]
    code, out = run_cli("depth", "predict", f"model={bad}", f"source={src}", f"project={tmp_path}")
    assert code == 2 and "Traceback" not in out
    line = " ".join(out.split())  # rich wraps long lines
    assert "other.pth" in line and "missing keys" in line and "unexpected keys [fc.weight]" in line


def test_features_of_a_vit_and_error_for_a_cnn(official_pth: Path, depth_run: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "src", 1, (50, 70))[0]
    code, out = run_cli("depth", "features", f"model={official_pth}", f"source={src}", "imgsz=[56,70]",
                        f"project={tmp_path}", "name=feat", "threads=1")
    assert code == 0, out
    feats = np.load(tmp_path / "feat" / "img0.npy")
    assert feats.shape == (4, 384, 4, 5) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.asarray(Image.open(tmp_path / "feat" / "img0_pca.png")).shape == (56, 70, 3)
    code, out = run_cli("depth", "features", f"model={depth_run}", f"source={src}", f"project={tmp_path}")
    assert code == 2 and "has no features()" in " ".join(out.split())


# ------------------------------------------------------------------ compare, overfit, data check


def test_compare_ranks_lower_absrel_first(depth_run: Path, tmp_path: Path) -> None:
    worse = tmp_path / "runs" / "worse"
    shutil.copytree(depth_run, worse)
    shutil.copytree(depth_run, tmp_path / "runs" / "tiny")
    res = json.loads((worse / "results.json").read_text())
    res["val"]["absrel"] += 0.5
    (worse / "results.json").write_text(json.dumps(res))
    code, out = run_cli("compare", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"))
    assert code == 0, out
    rows = {Path(r["run"]).name: r for r in csv.DictReader(open(tmp_path / "cmp.csv"))}
    assert rows["tiny"]["rank"] == "1/2" and rows["worse"]["rank"] == "2/2"
    assert {"absrel", "delta1", "synthetic/absrel"} <= set(rows["tiny"])


@pytest.mark.slow
def test_overfit_loss_falls(tmp_path: Path) -> None:
    code, out = run_cli("depth", "train", "imgsz=64", "overfit=4", "synthetic_train=4", "batch=4", "epochs=25",
                        "lr=0.003", "encoder_lr=1", "warmup_epochs=0", "workers=0", "mlflow=false", "plots=false",
                        "threads=1", f"project={tmp_path}", "name=of")
    assert code == 0, out
    losses = [float(r["train/loss"]) for r in csv.DictReader(open(tmp_path / "of" / "metrics.csv"))]
    assert losses[-1] < 0.4 * losses[0], losses
    # a lower loss is not enough: the model must have learnt the disparity (the least-squares loss on raw
    # disparities once fell while predictions stayed uncorrelated, or anti-correlated, with the truth)
    from visionlab.data.synthetic import render_scene
    from visionlab.data.synthetic_rooms import is_room, render_room
    from visionlab.engine.model_io import load_model
    from visionlab.tasks.base import get_task

    task = get_task("depth")
    model, _ = load_model(tmp_path / "of", "cpu", task=task)
    scenes = [(render_room if is_room(i, 0.5) else render_scene)(i, 64, 64) for i in range(4)]
    preds = task.infer(model, [sc.image for sc in scenes], (64, 64))
    corr = [np.corrcoef(p.ravel(), 1 / sc.depth.ravel())[0, 1] for p, sc in zip(preds, scenes)]
    assert min(corr) > 0.5, corr


def test_data_check_names_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    png(root / "a_rgb.png", np.zeros((40, 48, 3), np.uint8))
    png(root / "a_depth.png", np.full((40, 48), 1000, np.uint16))
    png(root / "b_rgb.png", np.zeros((40, 48, 3), np.uint8))
    png(root / "b_depth.png", np.full((30, 48), 1000, np.uint16))  # wrong size
    png(root / "c_rgb.png", np.zeros((40, 48, 3), np.uint8))  # no depth
    code, out = run_cli("data", "check", "--task", "depth", f"tum:{root}", "--out", str(tmp_path / "m.json"))
    line = " ".join(out.split())
    assert code == 1 and "b_depth.png" in line and "c_rgb.png" in line and "a_depth.png" not in line, out
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["splits"]["train"]["images"] == 1 and len(report["problems"]) == 2


def test_val_on_real_depth_frames(depth_run: Path, tmp_path: Path) -> None:
    root = shared_path("data", "depth", "middlebury_2001_2003")
    code, out = run_cli("depth", "val", f"model={depth_run}", f"data={root}", "workers=0", "threads=1",
                        f"project={tmp_path}", "plots=false", "batch=2")
    assert code == 0, out
    assert "absrel" in out and "4 images" in " ".join(out.split())
