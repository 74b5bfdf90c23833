"""`visionlab bench`: the statistics, FLOP count and Pareto/best-variant rules on hand-computed values, then
every variant on a tiny model of each task (segment, depth, classify) with tiny iteration counts; the
metric each variant reports must equal what `val` measures for the same model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import run_cli
from visionlab.engine import bench as bench_mod
from visionlab.engine.bench import FixedBatch
from visionlab.engine.bench_report import count_flops, latency_stats
from visionlab.engine.bench_report import best_variant, pareto_front
from visionlab.models.registry import create_model
from visionlab.tasks.base import task_names
from visionlab.utils.checkpoint import save_checkpoint

QUICK = ["warmup=1", "iters=2", "repeats=1", "calib=2", "batch=2", "workers=0", "threads=1"]
SEGMENT_DATA = {"data": "synthetic", "imgsz": [64, 64], "synthetic_train": 4, "synthetic_val": 4}


def make_cifar_like(root: Path) -> str:
    """A tiny cifar10 folder (official pickle format, 4 train / 2 test images per class)."""
    from test_classify_task import make_cifar

    return f"cifar10:{make_cifar(root, per_class=4, test_per_class=2)}"


def tiny_checkpoint(task: str, folder: Path) -> Path:
    """A random-weight checkpoint of a small model of ``task`` whose config points at tiny data: what
    val/bench/export inherit. Metrics of random weights are arbitrary but deterministic, which is all
    parity needs."""
    torch.manual_seed(0)
    if task == "segment":
        arch, kwargs, config = "unet_mini", {"num_classes": 8, "width": 8}, dict(SEGMENT_DATA)
    elif task == "depth":
        arch, kwargs = "depth_cnn", {"encoder": "resnet10t", "width": 16}
        config = {**SEGMENT_DATA, "imgsz": [64, 64]}
    else:
        from visionlab.data.classify import CIFAR10_CLASSES

        arch = "small_cnn"
        kwargs = {"num_classes": 10, "in_channels": 3, "width": 8, "classes": list(CIFAR10_CLASSES)}
        config = {"data": make_cifar_like(folder / "data"), "imgsz": [32, 32], "tta": False, "val_fraction": 0.1}
    model = create_model(arch, **kwargs)
    meta = {"task": task, "arch": arch, "arch_kwargs": kwargs, "imgsz": config["imgsz"],
            "params": sum(p.numel() for p in model.parameters()), "config": config}
    return save_checkpoint(folder / f"{task}.safetensors", model.state_dict(), meta)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {t: tiny_checkpoint(t, root) for t in task_names() if t in ("segment", "depth", "classify")}


# ----------------------------------------------------------------------------- hand-computed pieces


def test_latency_stats_hand_values() -> None:
    s = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert s["mean_ms"] == 2.5 and s["p50_ms"] == 2.5
    assert s["std_ms"] == pytest.approx((5 / 3) ** 0.5)  # sample std: sum of squares 5 over n-1 = 3
    assert s["p95_ms"] == pytest.approx(3.85)  # numpy linear: 3 + 0.85 * (4 - 3)
    assert s["p99_ms"] == pytest.approx(3.97)


def test_flops_of_a_conv_and_a_linear() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 8, 8)) == 2 * 4 * 8 * 8 * 3 * 9  # 2 per multiply-add
    assert count_flops(nn.Linear(5, 7), torch.zeros(2, 5)) == 2 * 2 * 5 * 7


def test_fixed_batch_pads_the_last_chunk_and_drops_it() -> None:
    seen = []

    def net(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x * 2

    x = torch.arange(5.0).view(5, 1)
    out = FixedBatch(net, 2)(x)
    assert seen == [2, 2, 2] and torch.equal(out, x * 2)


@pytest.mark.parametrize("native", [False, True])
def test_half_precision_variants_skip_only_where_emulated(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from visionlab.engine import bench as bench_mod
    from visionlab.engine import onnx_model

    flags = {"avx512_bf16": False, "amx_bf16": native, "avx512_fp16": False}
    monkeypatch.setattr(onnx_model, "cpu_flags", lambda: flags)
    ctx = SimpleNamespace(device=torch.device("cpu"), requested=["eager", "bf16", "compile_bf16"])
    if native:
        bench_mod._check_half(ctx, "compile_bf16", torch.bfloat16)  # AMX: measured
    else:
        ctx.requested = ["eager"]  # not asked for by name: a skipped row with the reason
        with pytest.raises(bench_mod.Skipped, match="avx512_bf16 or AMX"):
            bench_mod._check_half(ctx, "compile_bf16", torch.bfloat16)
        ctx.requested = ["eager", "compile_bf16"]  # asked for by name: measured anyway
        bench_mod._check_half(ctx, "compile_bf16", torch.bfloat16)
    with pytest.raises(bench_mod.Skipped, match="avx512_fp16"):
        bench_mod._check_half(SimpleNamespace(device=torch.device("cpu"), requested=["eager"]), "fp16", torch.float16)


def test_pareto_front_and_best_variant_follow_the_fitness_direction() -> None:
    rows = [{"variant": "eager", "status": "ok", "mean_ms": 10.0, "metric": 0.80},
            {"variant": "a", "status": "ok", "mean_ms": 5.0, "metric": 0.795},
            {"variant": "b", "status": "ok", "mean_ms": 3.0, "metric": 0.70},
            {"variant": "c", "status": "ok", "mean_ms": 6.0, "metric": 0.79},  # beaten by a on both
            {"variant": "d", "status": "failed", "note": "x"}]
    assert [rows[i]["variant"] for i in pareto_front(rows, "max")] == ["b", "a", "eager"]
    assert best_variant(rows, "max", 0.01)["variant"] == "a"
    assert best_variant(rows, "max", 0.2)["variant"] == "b"
    assert best_variant(rows, "max", 0.0)["variant"] == "eager"
    # lower is better (AbsRel): c (0.79) is now better than a and eager
    assert [rows[i]["variant"] for i in pareto_front(rows, "min")] == ["b"]
    assert best_variant(rows, "min", 0.0)["variant"] == "b"


# ----------------------------------------------------------------------------- the command


def _rows(run: Path) -> dict[str, dict[str, str]]:
    with open(run / "results.csv", newline="") as f:
        return {r["variant"]: r for r in csv.DictReader(f)}


def test_bench_every_variant_on_segment(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    variants = "eager,channels_last,bf16,fp16,ort,ort_int8_static,ort_int8_dynamic"
    code, out = run_cli("bench", f"model={checkpoints['segment']}", f"variants={variants}", *QUICK,
                        f"project={tmp_path}", "name=seg")
    assert code == 0, out
    run = tmp_path / "seg"
    for name in ("results.csv", "results.md", "latency.png", "pareto.png", "env.json", "config.yaml", "bench.json"):
        assert (run / name).is_file(), name
    rows = _rows(run)
    assert list(rows) == variants.split(",")
    for name, r in rows.items():  # every asked variant is a row: measured, or skipped/failed with a reason
        assert r["status"] == "ok" or r["note"], name
    assert rows["eager"]["status"] == "ok" and float(rows["eager"]["speedup"]) == 1.0
    # the metric of the baseline is what `segment val` measures; fp32 ORT matches it
    from visionlab import val

    expected = val("segment", model=str(checkpoints["segment"]), workers=0, plots=False)["miou"]
    assert float(rows["eager"]["metric"]) == pytest.approx(expected, abs=1e-9)
    assert float(rows["channels_last"]["metric"]) == pytest.approx(expected, abs=1e-6)
    assert float(rows["ort"]["metric"]) == pytest.approx(expected, abs=1e-4)
    assert abs(float(rows["ort_int8_static"]["metric"]) - expected) < 0.05
    # INT8 files are about a quarter of the fp32 ones
    assert float(rows["ort_int8_static"]["size_mb"]) < 0.5 * float(rows["ort"]["size_mb"])
    env = json.loads((run / "env.json").read_text())
    assert {"avx2", "avx512f", "avx512_vnni", "amx_tile"} <= set(env["cpu_flags"])
    assert env["load_average_start"] is not None
    summary = json.loads((run / "bench.json").read_text())
    assert summary["gflops"] > 0 and summary["best"]["variant"] in rows
    # `visionlab compare` lists the bench run with its best variant
    from visionlab.engine.compare import compare

    _, records = compare([str(tmp_path)])
    assert records[0]["best_variant"] == summary["best"]["variant"] and records[0]["task"] == "segment"


@pytest.mark.parametrize("task", ["depth", "classify"])
def test_bench_other_tasks_same_command(task: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    if task not in checkpoints:
        pytest.skip(f"task {task} is not registered")
    code, out = run_cli("bench", f"model={checkpoints[task]}", "variants=[eager,ort,ort_int8_static]", *QUICK,
                        f"project={tmp_path}", "name=b")
    assert code == 0, out
    rows = _rows(tmp_path / "b")
    assert [r["status"] for r in rows.values()] == ["ok", "ok", "ok"], rows
    assert float(rows["ort"]["metric"]) == pytest.approx(float(rows["eager"]["metric"]), abs=1e-4)
    summary = json.loads((tmp_path / "b" / "bench.json").read_text())
    from visionlab.tasks.base import get_task

    assert summary["fitness_mode"] == get_task(task).fitness_mode  # depth: AbsRel, lower is better


def test_a_failing_variant_is_a_row_with_its_reason(checkpoints: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench_mod.build_variant

    def broken(name: str, ctx: bench_mod.Context) -> bench_mod.Variant:
        if name == "ort_int8_dynamic":
            raise RuntimeError("simulated exporter crash\nsecond line")
        return real(name, ctx)

    monkeypatch.setattr(bench_mod, "build_variant", broken)
    code, out = run_cli("bench", f"model={checkpoints['segment']}", "variants=[ort_int8_dynamic]", *QUICK,
                        f"project={tmp_path}", "name=f")
    assert code == 0, out
    rows = _rows(tmp_path / "f")
    assert list(rows) == ["eager", "ort_int8_dynamic"]  # the baseline is always measured
    assert rows["ort_int8_dynamic"]["status"] == "failed"
    assert rows["ort_int8_dynamic"]["note"] == "RuntimeError: simulated exporter crash"
    assert "simulated exporter crash" in (tmp_path / "f" / "results.md").read_text()


def test_bad_keys_are_one_line(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    code, out = run_cli("bench", f"model={checkpoints['segment']}", "variants=[eager,turbo]")
    assert code == 2 and "variants=" in out and "ort_int8_static" in out
    code, out = run_cli("bench", f"model={checkpoints['segment']}", "iters=0")
    assert code == 2 and "iters=0" in out
    code, out = run_cli("bench", f"model={tmp_path / 'missing.safetensors'}")
    assert code == 2 and "missing.safetensors" in out


@pytest.mark.slow
def test_compile_variant(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """torch.compile with freezing: minutes of C++ compilation on 2 cores, hence slow."""
    code, out = run_cli("bench", f"model={checkpoints['segment']}", "variants=[compile,compile_bf16]", *QUICK,
                        f"project={tmp_path}", "name=c")
    assert code == 0, out
    rows = _rows(tmp_path / "c")
    for name, tolerance in (("compile", 1e-4), ("compile_bf16", 0.05)):  # bf16: 8-bit mantissa
        row = rows[name]
        assert row["status"] in ("ok", "skipped", "failed") and (row["status"] == "ok" or row["note"])
        if row["status"] == "ok":
            assert float(row["metric"]) == pytest.approx(float(rows["eager"]["metric"]), abs=tolerance)
