"""End to end through the CLI: train -> run folder -> val -> predict -> compare, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, run_cli, shared_path


def test_run_folder_contents(tiny_run: Path) -> None:
    for name in ("config.yaml", "env.json", "train.log", "metrics.csv", "results.json", "curves.png",
                 "confusion_matrix.png", "predictions.png", "weights/best.safetensors", "weights/last.safetensors"):
        assert (tiny_run / name).is_file(), name
    rows = list(csv.DictReader(open(tiny_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train/loss", "val/loss", "miou", "iou/human", "time_s", "peak_mem_mb"} <= set(rows[0])
    env = json.loads((tiny_run / "env.json").read_text())
    assert env["torch"].startswith("2.14.1") and env["cpu"] and "timm" in env["packages"]
    results = json.loads((tiny_run / "results.json").read_text())
    assert 0 <= results["val"]["miou"] <= 1 and results["inference_ms"]["p50"] > 0


def test_checkpoint_alone_rebuilds_model(tiny_run: Path) -> None:
    import torch

    import visionlab

    model, meta = visionlab.load_model(str(tiny_run / "weights" / "best.safetensors"))
    assert meta["arch"] == "unet_mini" and meta["task"] == "segment"
    out = model(torch.rand(1, 3, 64, 64) * 255)
    assert out.shape == (1, 8, 64, 64)


def test_val_matches_training_report(tiny_run: Path, tmp_path: Path) -> None:
    code, out = run_cli("segment", "val", f"model={tiny_run}", "workers=0", f"project={tmp_path}", "synthetic_val=6")
    assert code == 0, out
    assert "mIoU" in out and "human" in out
    saved = json.loads(next(tmp_path.glob("*/metrics.json")).read_text())
    trained = json.loads((tiny_run / "results.json").read_text())["val"]
    assert saved["miou"] == pytest.approx(trained["miou"], abs=1e-6)


def test_predict_image_and_folder_with_corrupt_file(tiny_run: Path, tmp_path: Path) -> None:
    from visionlab.data.synthetic import render_scene

    src = tmp_path / "images"
    src.mkdir()
    Image.fromarray(render_scene(3, 90, 120).image).save(src / "a.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out = run_cli("segment", "predict", f"model={tiny_run}", f"source={src}", f"project={tmp_path}",
                        "name=pred")
    assert code == 0, out
    mask = np.array(Image.open(tmp_path / "pred" / "masks" / "a.png"))
    assert mask.shape == (90, 120) and mask.max() < 8  # native size, category ids
    assert (tmp_path / "pred" / "overlays" / "a.jpg").is_file()
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["images"] == 1 and len(summary["skipped"]) == 1 and "broken.png" in summary["skipped"][0]


def test_compare_table(tiny_run: Path, tmp_path: Path) -> None:
    out_base = tmp_path / "cmp"
    code, out = run_cli("compare", str(tiny_run.parent), "--out", str(out_base))
    assert code == 0, out
    md = (tmp_path / "cmp.md").read_text()
    assert "miou" in md and "iou/human" in md and "unet_mini" in md
    rows = list(csv.DictReader(open(tmp_path / "cmp.csv")))
    assert rows[0]["model"] == "unet_mini" and float(rows[0]["params_M"]) > 0 and float(rows[0]["infer_ms"]) > 0


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        code, out = run_cli("segment", "train", *TINY, "epochs=1", f"project={tmp_path}", f"name={name}", "plots=false")
        assert code == 0, out
        results.append(json.loads((tmp_path / name / "results.json").read_text())["val"])
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["epoch=3"], "did you mean 'epochs'"),
        (["data=camvid:/no/such/dir"], "/no/such/dir"),
        (["model=nonexistent.safetensors"], "nonexistent.safetensors"),
        (["model=unet_mni"], "unet_mini"),
        (["imgsz=4"], "imgsz"),
        (["loss=hinge"], "loss"),
    ],
)
def test_bad_train_settings_give_one_clear_line(args: list[str], expected: str, tmp_path: Path) -> None:
    code, out = run_cli("segment", "train", *TINY, f"project={tmp_path}", *args)
    assert code == 2
    assert "error:" in out and expected in out and "Traceback" not in out


def test_val_on_corrupt_dataset_names_file(tiny_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for split in ("val",):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(root / "images" / "val" / "x.png")
    Image.fromarray(np.full((40, 48), 9, np.uint8)).save(root / "masks" / "val" / "x.png")  # id 9 is no category
    code, out = run_cli("segment", "val", f"model={tiny_run}", f"data=folder:{root}", "workers=0",
                        f"project={tmp_path}")
    assert code == 2 and "x.png" in out and "9" in out


def test_val_on_real_camvid(tiny_run: Path, tmp_path: Path) -> None:
    camvid = shared_path("data", "camvid")
    code, out = run_cli("segment", "val", f"model={tiny_run}", f"data=camvid:{camvid}", "split=val", "workers=0",
                        f"project={tmp_path}", "plots=false", "cache=false", "batch=8")
    assert code == 0, out
    assert "mIoU (7 categories)" in out


def test_cityscapes_sample_predict_and_val(tiny_run: Path, tmp_path: Path) -> None:
    root = shared_path("data", "cityscapes_sample")
    code, out = run_cli("segment", "val", f"model={tiny_run}", f"data=cityscapes:{root}", "split=val",
                        "workers=0", f"project={tmp_path}", "plots=false")
    assert code == 0, out
    assert "mIoU (7 categories)" in out


def test_predict_fails_when_no_source_could_be_read(tiny_run: Path, tmp_path: Path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out = run_cli("segment", "predict", f"model={tiny_run}", f"source={src}", f"project={tmp_path}",
                        "name=pred")
    out = " ".join(out.split())
    assert code == 2 and "none of the 1 image(s) could be read" in out and "broken.png" in out
    assert "category_share" not in out  # no all-zero class distribution
