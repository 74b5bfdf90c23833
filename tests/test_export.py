"""`visionlab export`: every format round-trips with its parity check, exported ONNX files load back through
`val` / `predict` (same metric as the checkpoint), the metadata travels in the file, dynamic H/W is
verified (and falls back to fixed with a note), and the shape subgraph stays out of INT8 quantisation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import png, run_cli
from test_bench import tiny_checkpoint
from visionlab import val
from visionlab.engine.export import check_dynamic_hw, export_onnx
from visionlab.engine.model_io import load_model, read_model_meta
from visionlab.engine.onnx_model import shape_subgraph_nodes
from visionlab.tasks.base import task_names

FAST = ["workers=0", "threads=1", "max_images=4", "calib=4"]


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint("segment", tmp_path_factory.mktemp("seg"))


def _parity(file: Path) -> dict:
    return json.loads(file.with_name(file.name + ".parity.json").read_text())


def test_onnx_round_trip_val_predict_and_metadata(seg: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    code, text = run_cli("export", f"model={seg}", "format=onnx", f"out={out}", *FAST)
    assert code == 0, text
    record = _parity(out)
    assert record["parity"]["images"] == 4 and record["parity"]["max_abs_diff"] < 1e-3
    assert record["dynamic_batch"] and record["dynamic_hw"] and record["opset"] == 17
    meta = read_model_meta(out)
    assert meta["task"] == "segment" and meta["arch"] == "unet_mini" and meta["imgsz"] == [64, 64]
    assert meta["labels"][0] == "void" and len(meta["labels"]) == 8 and meta["input_multiple"] == 1
    assert meta["config"]["data"] == "synthetic" and meta["visionlab_version"]
    # the same mIoU through ONNX Runtime as through PyTorch (val inherits data/imgsz from the file)
    expected = val("segment", model=str(seg), workers=0, plots=False)["miou"]
    assert val("segment", model=str(out), workers=0, plots=False)["miou"] == pytest.approx(expected, abs=1e-3)
    code, text = run_cli("segment", "val", f"model={out}", "workers=0", "plots=false")
    assert code == 0 and f"{expected:.4f}" in text, text
    # dynamic batch and H/W: a 2 x 96 x 128 batch matches PyTorch
    model, _ = load_model(out)
    torch_model, _ = load_model(seg)
    x = torch.rand(2, 3, 96, 128) * 255
    with torch.no_grad():
        assert torch.allclose(model(x), torch_model(x), atol=1e-3)
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    code, text = run_cli("segment", "predict", f"model={out}", f"source={png(tmp_path / 'in' / 'a.png', image)}",
                         f"project={tmp_path}", "name=p", "workers=0")
    assert code == 0, text
    assert (tmp_path / "p" / "masks" / "a.png").is_file()


def test_int8_reports_the_metric_change(seg: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    code, text = run_cli("export", f"model={seg}", "format=onnx-int8", f"out={out}", *FAST)
    assert code == 0, text
    p = _parity(out)["parity"]
    assert p["metric"] == "miou" and p["images"] == 4
    expected = val("segment", model=str(seg), workers=0, plots=False)["miou"]
    assert p["reference"] == pytest.approx(expected, abs=1e-9)
    assert p["diff"] == pytest.approx(p["exported"] - p["reference"]) and abs(p["diff"]) < 0.05
    got = val("segment", model=str(out), workers=0, plots=False)["miou"]
    assert got == pytest.approx(p["exported"], abs=1e-6)
    assert out.stat().st_size < 0.5 * (seg.stat().st_size)


def test_torchscript_and_ort_formats(seg: Path, tmp_path: Path) -> None:
    ts = tmp_path / "m.torchscript.pt"
    code, text = run_cli("export", f"model={seg}", "format=torchscript", f"out={ts}", *FAST)
    assert code == 0, text
    assert _parity(ts)["parity"]["max_abs_diff"] < 1e-3
    extra = {"visionlab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the portable format
        torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["visionlab.json"])["arch"] == "unet_mini"
    code, text = run_cli("export", f"model={seg}", "format=ort", *FAST)  # default name: next to the checkpoint
    assert code == 0, text
    ort_file = seg.with_suffix(".ort")
    assert _parity(ort_file)["parity"]["max_abs_diff"] < 1e-3
    model, meta = load_model(ort_file, task="segment")
    assert meta["task"] == "segment" and meta["format"] == "ort"


@pytest.mark.parametrize("task", ["depth", "classify"])
def test_other_tasks_round_trip(task: str, tmp_path: Path) -> None:
    if task not in task_names():
        pytest.skip(f"task {task} is not registered")
    ckpt = tiny_checkpoint(task, tmp_path)
    out = tmp_path / "m.onnx"
    code, text = run_cli("export", f"model={ckpt}", "format=onnx", f"out={out}", *FAST)
    assert code == 0, text
    assert _parity(out)["parity"]["max_abs_diff"] < 1e-3
    from visionlab.tasks.base import get_task

    key = get_task(task).fitness_key
    expected = val(task, model=str(ckpt), workers=0, plots=False)[key]
    assert val(task, model=str(out), workers=0, plots=False)[key] == pytest.approx(expected, abs=1e-3)
    model, meta = load_model(out, task=task)
    assert meta["labels"] == get_task(task).labels(read_model_meta(ckpt))
    assert model.class_names == meta["labels"]  # what classify's infer names its results with


class FlattenHead(nn.Module):
    """A graph that bakes the input size in (flatten + Linear): dynamic H/W cannot work."""

    input_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_dynamic_hw_is_verified_at_a_second_size(tmp_path: Path) -> None:
    path = export_onnx(FlattenHead().eval(), tmp_path / "f.onnx", (8, 8), dynamic_hw=True)
    assert check_dynamic_hw(FlattenHead().eval(), path, (8, 8)) is not None
    conv = nn.Conv2d(3, 2, 3, padding=1).eval()
    path = export_onnx(conv, tmp_path / "c.onnx", (8, 8), dynamic_hw=True)
    assert check_dynamic_hw(conv, path, (8, 8)) is None


def test_keep_aspect_falls_back_to_imgsz_for_a_fixed_size_graph(tmp_path: Path) -> None:
    from visionlab.engine.onnx_model import OnnxModel
    from visionlab.tasks.base import get_task

    conv = nn.Conv2d(3, 8, 3, padding=1).eval()
    fixed = OnnxModel(export_onnx(conv, tmp_path / "fixed.onnx", (16, 16), dynamic_hw=False))
    dynamic = OnnxModel(export_onnx(conv, tmp_path / "dyn.onnx", (16, 16), dynamic_hw=True))
    assert fixed.fixed_hw == (16, 16) and dynamic.fixed_hw is None
    image = (np.random.default_rng(0).random((20, 40, 3)) * 255).astype(np.uint8)
    task = get_task("segment")
    kept = task.infer(fixed, [image], (16, 16), keep_aspect=True)[0]  # the graph only takes 16x16: no crash
    np.testing.assert_array_equal(kept, task.infer(fixed, [image], (16, 16))[0])
    assert kept.shape == (20, 40)
    calls: list[tuple[int, ...]] = []
    dynamic.register_forward_pre_hook(lambda _m, args: calls.append(tuple(args[0].shape)))
    task.infer(dynamic, [image], (16, 16), keep_aspect=True)
    assert calls == [(1, 3, 16, 32)]  # a dynamic graph keeps the 1:2 aspect ratio
    # wrapped for flip TTA (what 'val tta_flip=true keep_aspect=true' runs) the fixed graph still gets 16x16
    from visionlab.models.tta import DenseTTA

    flipped = task.infer(DenseTTA(fixed, (1.0,), flip=True), [image], (16, 16), keep_aspect=True)[0]
    assert flipped.shape == (20, 40)


def test_shape_subgraph_is_found() -> None:
    """Shape -> Gather -> Mul (with a constant) -> Reshape: the first three compute a shape (kept float);
    Reshape consumes the activation, so it is data, not shape arithmetic."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Constant", [], ["two"], name="const", value=helper.make_tensor("v", TensorProto.INT64, [1], [2])),
             helper.make_node("Mul", ["s", "two"], ["s2"], name="mul_shape"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "r"], ["y0"], name="mul_data"),
             helper.make_node("Reshape", ["y0", "s2"], ["y"], name="reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert shape_subgraph_nodes(helper.make_model(graph)) == ["shape", "mul_shape"]


def test_bad_input_is_one_line(seg: Path, tmp_path: Path) -> None:
    code, text = run_cli("export", f"model={seg}", "format=tflite")
    assert code == 2 and "format=tflite" in text and "onnx-int8" in text
    bare = export_onnx(nn.Conv2d(3, 2, 1).eval(), tmp_path / "bare.onnx", (32, 32))
    code, text = run_cli("segment", "val", f"model={bare}", "workers=0")
    assert code == 2 and "bare.onnx" in text and "without visionlab metadata" in text
    code, text = run_cli("export", f"model={bare}")
    assert code == 2 and "already exported" in text
    garbage = tmp_path / "junk.onnx"
    garbage.write_bytes(b"not a model")
    code, text = run_cli("segment", "val", f"model={garbage}", "workers=0")
    assert code == 2 and "junk.onnx" in text and len(text.strip().splitlines()) <= 3


def test_official_dav2_checkpoint_exports(tmp_path: Path) -> None:
    """An official Depth-Anything-V2 file (here: random weights in its layout) exports to ONNX: the task is
    found from the file, the DINOv2 pos-embed traces (its graph holds the export size, so the dynamic-H/W
    check falls back to fixed H/W with a note), and ONNX Runtime matches PyTorch."""
    from visionlab.models.dpt import DPTDepth

    torch.manual_seed(0)
    net = DPTDepth("vits")
    official = net.net.state_dict()  # the wrapped network keeps the official key layout (pretrained.*, depth_head.*)
    pth = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(official, pth)
    out = tmp_path / "dav2.onnx"
    code, text = run_cli("export", f"model={pth}", "format=onnx", "imgsz=[42,56]", f"out={out}", "data=synthetic",
                         "synthetic_val=4", *FAST)
    assert code == 0, text
    record = _parity(out)
    assert record["parity"]["max_abs_diff"] < 1e-3 and not record["dynamic_hw"] and "fixed H/W" in record["note"]
    assert read_model_meta(out)["task"] == "depth"
