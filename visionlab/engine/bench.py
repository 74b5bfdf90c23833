"""``visionlab bench model=CHECKPOINT``: the same model as several inference variants (eager fp32,
channels-last, torch.compile (fp32; bf16 inside the graph where the CPU has AMX or avx512_bf16), bf16/fp16
autocast, ONNX Runtime fp32 / static INT8 / dynamic INT8), each
timed with one protocol and each re-evaluated with the task's own metric on the evaluation set.

Protocol: threads = the cores this process may use (``configure_cpu``), denormals flushed, ``warmup``
calls, then ``repeats`` x ``iters`` individually timed batch-1 calls (CUDA synchronised) -> mean, std,
p50/p95/p99; throughput (images/s) at ``batch``. Speed-ups are ratios to the eager fp32 row of the same
run. A variant that cannot run here is a row with the reason, never a missing row.

The ONNX variants are exported with fixed shapes (batch 1 for latency, ``batch`` for throughput and
evaluation): ONNX Runtime then folds the graph's shape arithmetic (e.g. TF 'same' padding) away.
Task-agnostic: the task only supplies data, metric and its fitness direction.
"""

from __future__ import annotations

import copy
import gc
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionlab.engine.bench_report import PeakMemory, count_flops, latency_stats, time_calls
from visionlab.utils.progress import console

VARIANTS = ("eager", "channels_last", "compile", "bf16", "compile_bf16", "fp16", "ort", "ort_int8_static",
            "ort_int8_dynamic")
BENCH_KEYS: dict[str, Any] = {
    "variants": None,  # list (or comma-separated) of VARIANTS; default: all (those that can't run say why)
    "warmup": 5,  # untimed calls before each measurement
    "iters": 20,  # timed calls per repeat
    "repeats": 3,  # repeats of iters calls (statistics pool every call)
    "calib": 32,  # training images that calibrate static INT8
    "max_images": 0,  # evaluate each variant on at most this many images (0 = the whole split)
    "tolerance": 0.01,  # metric loss (absolute) a variant may have to count as "best" (0.01 = 1 point of mIoU)
    "opset": 17,
}


class Skipped(Exception):
    """A variant that does not apply on this machine (the message says why)."""


# ----------------------------------------------------------------------------- wrappers


class ChannelsLast(nn.Module):
    """NHWC weights and input: oneDNN / cuDNN convolutions without layout reorders."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


class Autocast(nn.Module):
    """``net`` under autocast to ``dtype``; outputs back in float32 (what metrics and postprocess expect)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, device_type: str):
        super().__init__()
        self.net, self.dtype, self.device_type = net, dtype, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.net(x).float()


class FixedBatch(nn.Module):
    """Runs any batch as chunks of ``size`` (the last padded): a compiled graph specialised to one batch
    size then serves evaluation without recompiling for the odd last batch."""

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], size: int):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, len(x), self.size):
            chunk = x[start:start + self.size]
            n = len(chunk)
            if n < self.size:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.size - n, *chunk.shape[1:])])
            outs.append(self.net(chunk)[:n])
        return torch.cat(outs)


@dataclass
class Variant:
    """How one variant runs: a batch-1 callable (latency), a batch-``batch`` one (throughput), one for
    evaluation (any batch), the file it would ship as, and notes."""

    latency: Callable[[torch.Tensor], torch.Tensor]
    throughput: Callable[[torch.Tensor], torch.Tensor]
    evaluate: nn.Module
    artefact: Path | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- variants


@dataclass
class Context:
    """What building the variants needs, shared between them (ONNX exports are made once)."""

    model: nn.Module  # eager fp32, on device
    cpu_model: nn.Module  # eager fp32 on CPU, for exports
    device: torch.device
    imgsz: tuple[int, int]
    batch: int
    opset: int
    work: Path  # run_dir/artefacts
    calibration: Callable[[], list[torch.Tensor]]  # real training images, loaded on first use
    requested: set[str]
    onnx: dict[int, Path] = field(default_factory=dict)

    def fp32_onnx(self, batch: int) -> Path:
        from visionlab.engine.export import export_onnx

        if batch not in self.onnx:
            self.onnx[batch] = export_onnx(self.cpu_model, self.work / f"fp32_b{batch}.onnx", self.imgsz, self.opset,
                                           dynamic_batch=False, batch=batch)
        return self.onnx[batch]


def _sizes(ctx: Context) -> list[int]:
    return sorted({1, ctx.batch})


def _ort_variant(ctx: Context, files: dict[int, Path], notes: list[str]) -> Variant:
    from visionlab.engine.onnx_model import OnnxModel

    sessions = {b: OnnxModel(p, device=ctx.device) for b, p in files.items()}
    return Variant(sessions[1], sessions[ctx.batch], sessions[ctx.batch], files[1], notes)


def _check_half(ctx: Context, name: str, dtype: torch.dtype) -> None:
    """Skipped when ``dtype`` would be emulated here (unless the user asked for the variant by name)."""
    from visionlab.engine.onnx_model import cpu_flags

    if ctx.device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise Skipped("this GPU has no bf16")
        return
    flags = cpu_flags()
    native = flags["avx512_bf16"] or flags["amx_bf16"] if dtype == torch.bfloat16 else flags["avx512_fp16"]
    if not native and name not in ctx.requested:
        need = "avx512_bf16 or AMX" if dtype == torch.bfloat16 else "avx512_fp16"
        raise Skipped(f"CPU has no {need}: {name} is emulated and slower than fp32 here "
                      f"(variants=[{name}] measures it anyway)")


def _autocast_variant(ctx: Context, name: str) -> Variant:
    dtype = torch.bfloat16 if name == "bf16" else torch.float16
    _check_half(ctx, name, dtype)
    net = Autocast(ctx.model, dtype, ctx.device.type)
    return Variant(net, net, net, None, ["autocast: weights stay fp32 on disk"])


def _compile_variant(ctx: Context, name: str) -> Variant:
    import torch._inductor.config as inductor_config

    if ctx.device.type == "cpu" and not (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")):
        raise Skipped("no C++ compiler (inductor generates C++ on CPU)")
    dtype = torch.bfloat16 if name == "compile_bf16" else None
    if dtype is not None:
        _check_half(ctx, name, dtype)
    inductor_config.freezing = True  # weights become constants: conv+BN folding, prepacked oneDNN weights
    net = copy.deepcopy(ctx.model).eval()
    compiled = torch.compile(Autocast(net, dtype, ctx.device.type) if dtype else net, dynamic=False)
    fixed = FixedBatch(compiled, ctx.batch)
    return Variant(compiled, compiled, fixed, None, ["inductor, freezing=True, one graph per batch size"]
                   + (["bf16 autocast inside the graph (oneDNN: AMX / avx512_bf16 kernels)"] if dtype else []))


def build_variant(name: str, ctx: Context) -> Variant:
    """The callables of variant ``name``; raises Skipped (does not apply here) or any error (failed)."""
    from visionlab.engine.export import calibration_batches
    from visionlab.engine.onnx_model import quantize_dynamic_onnx, quantize_static_onnx, vnni_available

    if name == "eager":
        return Variant(ctx.model, ctx.model, ctx.model)
    if name == "channels_last":
        net = ChannelsLast(copy.deepcopy(ctx.model))
        return Variant(net, net, net)
    if name in ("compile", "compile_bf16"):
        return _compile_variant(ctx, name)
    if name in ("bf16", "fp16"):
        return _autocast_variant(ctx, name)
    if name == "ort":
        return _ort_variant(ctx, {b: ctx.fp32_onnx(b) for b in _sizes(ctx)}, ["ORT_ENABLE_ALL, fixed shapes"])
    if name == "ort_int8_static":
        images = ctx.calibration()
        files = {b: quantize_static_onnx(ctx.fp32_onnx(b), ctx.work / f"int8_static_b{b}.onnx",
                                         calibration_batches(images, b)) for b in _sizes(ctx)}
        return _ort_variant(ctx, files, [f"QDQ per-channel, {len(images)} calibration images, "
                                         f"reduce_range={not vnni_available()}"])
    if name == "ort_int8_dynamic":
        files = {b: quantize_dynamic_onnx(ctx.fp32_onnx(b), ctx.work / f"int8_dynamic_b{b}.onnx") for b in _sizes(ctx)}
        return _ort_variant(ctx, files, ["weights int8 offline, activations per call"])
    raise Skipped(f"unknown variant '{name}'")


def _measure(name: str, ctx: Context, x1: torch.Tensor, xb: torch.Tensor, opts: dict[str, Any], task: Any, cfg: Any,
             loader: Any, weights_mb: float) -> dict[str, Any]:
    from visionlab.engine.evaluator import evaluate

    row: dict[str, Any] = {"variant": name, "status": "ok"}
    variant = build_variant(name, ctx)
    with PeakMemory(ctx.device) as memory:
        times = time_calls(variant.latency, x1, ctx.device, opts["warmup"], opts["iters"], opts["repeats"])
        calls = max(2, -(-opts["iters"] // ctx.batch))  # about as many images as the latency run
        tput = time_calls(variant.throughput, xb, ctx.device, min(opts["warmup"], 2), calls, opts["repeats"])
    row.update(latency_stats(times))
    row["throughput_ips"] = len(xb) * len(tput) / (sum(tput) / 1000)
    row["peak_mem_mb"] = round(memory.peak_mb, 1)
    metrics, _ = evaluate(variant.evaluate, loader, task, cfg, ctx.device, distributed=False)
    row["metric"] = float(metrics[task.fitness_key])
    row.update({f"val/{k}": float(v) for k, v in metrics.items() if k in task.summary_keys})
    row["size_mb"] = round(variant.artefact.stat().st_size / 2**20, 3) if variant.artefact else weights_mb
    row["note"] = "; ".join(variant.notes)
    return row


# ----------------------------------------------------------------------------- the command


def _variant_list(value: Any) -> list[str]:
    from visionlab.cfg import ConfigError

    if value is None:
        return list(VARIANTS)
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ConfigError(f"variants={value}: expected a list of {', '.join(VARIANTS)}")
    return ["eager"] + [n for n in names if n != "eager"]  # the baseline is always measured first


def _options(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from visionlab.cfg import ConfigError
    from visionlab.engine.export import split_overrides

    opts, rest = split_overrides(overrides, BENCH_KEYS)
    for key in ("warmup", "iters", "repeats", "calib", "max_images", "opset"):
        if not isinstance(opts[key], int) or opts[key] < (1 if key in ("iters", "repeats", "calib") else 0):
            raise ConfigError(f"{key}={opts[key]}: expected a whole number >= {1 if key in ('iters', 'repeats', 'calib') else 0}")
    if not isinstance(opts["tolerance"], (int, float)) or opts["tolerance"] < 0:
        raise ConfigError(f"tolerance={opts['tolerance']}: expected a number >= 0 (e.g. 0.01)")
    opts["variants"] = _variant_list(opts["variants"])
    return opts, rest


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run_bench(overrides: dict[str, Any]) -> Path:
    """``visionlab bench model=CKPT [variants=...] ...``: measures, writes the run folder, returns it."""
    import yaml
    from torch.utils.data import Subset

    from visionlab.cfg import ConfigError
    from visionlab.engine.bench_report import best_variant, plot_latency, plot_pareto, write_tables
    from visionlab.engine.evaluator import eval_config, make_eval_loader
    from visionlab.engine.export import calibration_dataset, real_images
    from visionlab.engine.model_io import check_input_size, load_model, read_any_model_meta, resolve_weights
    from visionlab.engine.onnx_model import cpu_flags, is_onnx_file
    from visionlab.tasks.base import get_task
    from visionlab.utils.files import atomic_write_json, atomic_write_text
    from visionlab.utils.runtime import configure_cpu, environment_info, increment_path, select_device

    opts, rest = _options(overrides)
    if not rest.get("model"):
        raise ConfigError("bench needs model=PATH (a checkpoint or a run folder)")
    if is_onnx_file(rest["model"]):
        raise ConfigError(f"model={rest['model']}: bench the .safetensors checkpoint (it builds the ONNX variants)")
    weights = resolve_weights(rest["model"])
    meta0 = read_any_model_meta(weights)
    task = get_task(meta0["task"])
    rest["model"] = str(weights)
    rest.setdefault("project", "runs/bench")  # bench runs of every task side by side
    rest.setdefault("name", meta0["arch"])
    cfg = eval_config(task, rest, "bench")
    cfg.amp = False  # the baseline is plain fp32; precision variants are explicit rows
    load_start = load_average()
    device = select_device(cfg.device)
    configure_cpu(cfg.threads)
    model, meta = load_model(weights, device, task=task)
    check_input_size(model, cfg, meta["arch"])
    save_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
    work = save_dir / "artefacts"
    work.mkdir(parents=True, exist_ok=True)
    imgsz = tuple(cfg.imgsz)

    dataset = task.build_dataset(cfg, cfg.split, train=False)
    if 0 < opts["max_images"] < len(dataset):
        dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, opts["max_images"]).astype(int).tolist())
    loader = make_eval_loader(task, dataset, cfg, device, distributed=False)
    images = real_images(task, cfg, cfg.batch, dataset)
    x1 = images[0].to(device)
    xb = torch.cat([images[i % len(images)] for i in range(cfg.batch)]).to(device)
    calibration: list[torch.Tensor] = []

    def calibration_images() -> list[torch.Tensor]:
        if not calibration:
            calibration.extend(real_images(task, cfg, opts["calib"], calibration_dataset(task, cfg)))
        return calibration

    cpu_model = copy.deepcopy(model).cpu().eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in cpu_model.state_dict().items()}, str(work / "fp32.safetensors"))
    weights_mb = round((work / "fp32.safetensors").stat().st_size / 2**20, 3)
    flops = count_flops(cpu_model, x1.cpu())
    params = sum(p.numel() for p in cpu_model.parameters())
    ctx = Context(model, cpu_model, device, imgsz, cfg.batch, opts["opset"], work, calibration_images,
                  set(overrides.get("variants") and opts["variants"] or ()))
    console.print(f"[bold]bench[/] {meta['arch']} ({task.name}) at {list(imgsz)} on {device}, "
                  f"{torch.get_num_threads()} threads; metric {task.fitness_key} on {cfg.data} split={cfg.split} "
                  f"({len(dataset)} images); variants: {', '.join(opts['variants'])}")
    import torch._inductor.config as inductor_config

    freezing = inductor_config.freezing
    rows: list[dict[str, Any]] = []
    try:
        for name in opts["variants"]:
            t0 = time.perf_counter()
            try:
                row = _measure(name, ctx, x1, xb, opts, task, cfg, loader, weights_mb)
            except Skipped as e:
                row = {"variant": name, "status": "skipped", "note": str(e)}
            except Exception as e:  # noqa: BLE001  (a failing variant is a row with its reason)
                if os.environ.get("VISIONLAB_DEBUG"):
                    raise
                row = {"variant": name, "status": "failed", "note": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            row.update(params=params, gflops=round(flops / 1e9, 4), bench_s=round(time.perf_counter() - t0, 1))
            if row["status"] == "ok":
                row["gflops_per_s"] = round(flops / 1e9 / (row["mean_ms"] / 1000), 2)
            rows.append(row)
            _print_row(row, task.fitness_key)
            gc.collect()
    finally:
        inductor_config.freezing = freezing
    base = rows[0] if rows and rows[0]["status"] == "ok" else None
    for row in rows:
        if base and row["status"] == "ok":
            row["speedup"] = base["mean_ms"] / row["mean_ms"]
            row["throughput_speedup"] = row["throughput_ips"] / base["throughput_ips"]
            row["metric_diff"] = row["metric"] - base["metric"]
    best = best_variant(rows, task.fitness_mode, opts["tolerance"])
    title = f"{meta['arch']} {task.name} {imgsz[0]}x{imgsz[1]} on {environment_info()['cpu'] if device.type == 'cpu' else device}"
    write_tables(rows, save_dir, task.fitness_key)
    plot_latency(rows, save_dir / "latency.png", title)
    plot_pareto(rows, save_dir / "pareto.png", task.fitness_key, task.fitness_mode, title)
    env = {**environment_info(), "cpu_flags": cpu_flags(), "load_average_start": load_start,
           "load_average_end": load_average(), "device": str(device)}
    atomic_write_json(save_dir / "env.json", env)
    atomic_write_text(save_dir / "config.yaml", yaml.safe_dump({**cfg.model_dump(mode="json"), "bench": opts},
                                                              sort_keys=False))
    summary = {"kind": "bench", "task": task.name, "model": meta["arch"], "checkpoint": str(weights),
               "data": cfg.data, "split": cfg.split, "imgsz": list(imgsz), "batch": cfg.batch,
               "fitness_key": task.fitness_key, "fitness_mode": task.fitness_mode, "tolerance": opts["tolerance"],
               "params": params, "gflops": round(flops / 1e9, 4), "best": best, "rows": rows}
    atomic_write_json(save_dir / "bench.json", summary)
    console.print((f"best within {opts['tolerance']} {task.fitness_key} of eager: [bold]{best['variant']}[/] "
                   f"{best['speedup']:.2f}x" if best else "no measured baseline") + f"; results in [bold]{save_dir}[/]")
    return save_dir


def _print_row(row: dict[str, Any], metric: str) -> None:
    if row["status"] != "ok":
        from rich.markup import escape

        console.print(f"  {row['variant']:<17} [yellow]{row['status']}[/]: {escape(row.get('note', ''))}", soft_wrap=True)
        return
    console.print(f"  {row['variant']:<17} {metric} {row['metric']:.4f}  mean {row['mean_ms']:.2f} ms  "
                  f"p95 {row['p95_ms']:.2f} ms  {row['throughput_ips']:.1f} img/s  {row['size_mb']} MB  "
                  f"peak {row['peak_mem_mb']} MB  ({row['bench_s']} s)")
