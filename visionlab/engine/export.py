"""``visionlab export model=CHECKPOINT format=onnx|onnx-int8|torchscript|ort``: portable files for serving,
each followed by a parity check against PyTorch stored next to it (``<file>.parity.json``).

- ``onnx``: dynamic batch, and dynamic H/W when the graph allows it (verified with ONNX Runtime at a second
  size against PyTorch; otherwise re-exported with fixed H/W and a note). The model's own normalisation
  is inside the graph (input: float RGB 0..255), metadata (task, arch, labels, imgsz, input_multiple,
  training config, visionlab version) in ``metadata_props``.
- ``onnx-int8``: static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on real
  training images; parity is the change of the task's metric on the evaluation set.
- ``ort``: ONNX Runtime's ORT format (for onnxruntime-mobile / minimal builds), basic optimisations only
  so the file stays hardware-independent.
- ``torchscript``: ``torch.jit.trace`` + ``torch.jit.freeze``; metadata in the archive's ``visionlab.json``.

The helpers here (``export_onnx``, ``real_images`` ...) and the graph tools in ``onnx_model`` (optimisation,
INT8 quantisation) are what ``visionlab bench`` builds its variants with. Shapes: torch's TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript
and handles every visionlab model.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visionlab.engine.onnx_model import optimize_onnx, quantize_static_onnx, vnni_available
from visionlab.utils.files import atomic_write_json
from visionlab.utils.progress import console

FORMATS = ("onnx", "onnx-int8", "torchscript", "ort")
DEFAULT_OPSET = 17  # supported by every ONNX Runtime since 1.15; newer opsets add nothing our models use
EXPORT_KEYS = {"format": "onnx", "opset": DEFAULT_OPSET, "out": None, "dynamic": True, "max_images": 32,
               "calib": 32}  # keys of `export` beyond the task's own settings


# ----------------------------------------------------------------------------- ONNX


def export_onnx(model: nn.Module, path: str | Path, imgsz: Sequence[int], opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, dynamic_hw: bool = False, batch: int = 1) -> Path:
    """Trace ``model`` (CPU, eval) at ``batch`` x 3 x imgsz into ``path``. Dynamic axes as asked: batch,
    and H/W of the input with every output dim beyond the batch (outputs differ per task)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.rand(batch, 3, *imgsz) * 255
    with torch.no_grad():
        out_dims = model(x).ndim
    axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        axes = {"images": {0: "batch"}, "output": {0: "batch"}}
    if dynamic_hw:
        axes.setdefault("images", {}).update({2: "height", 3: "width"})
        axes.setdefault("output", {}).update({i: f"out{i}" for i in range(1, out_dims)})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["output"], dynamic_axes=axes or None, do_constant_folding=True)
    return path


def second_size(imgsz: Sequence[int], multiple: int) -> tuple[int, int]:
    """A different valid input size for checking dynamic H/W: each side grows by >= 32 pixels."""
    step = multiple * max(1, -(-32 // multiple))
    return imgsz[0] + step, imgsz[1] + 2 * step


def max_mean_abs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(d.max()) if d.size else 0.0, float(d.mean()) if d.size else 0.0


def close_enough(reference: np.ndarray, other: np.ndarray, rtol: float = 1e-3) -> bool:
    """Float32 graph vs eager: the largest difference within ``rtol`` of the output's range."""
    scale = max(1.0, float(np.abs(reference).max()))
    return reference.shape == other.shape and max_mean_abs(reference, other)[0] <= rtol * scale


def check_dynamic_hw(model: nn.Module, path: Path, imgsz: Sequence[int]) -> str | None:
    """None if the ONNX file matches PyTorch at a second size; else why not (then export fixed H/W)."""
    from visionlab.engine.onnx_model import OnnxModel

    size = second_size(imgsz, int(getattr(model, "input_multiple", 1) or 1))
    x = torch.rand(2, 3, *size) * 255
    try:
        with torch.no_grad():
            reference = model(x).numpy()
        got = OnnxModel(path, level="basic")(x).numpy()
    except Exception as e:  # ORT shape errors at the new size: the graph baked the export size in
        return f"at {list(size)}: {str(e).splitlines()[0][:160]}"
    if not close_enough(reference, got):
        return f"at {list(size)}: outputs differ from PyTorch (max abs {max_mean_abs(reference, got)[0]:.3g})"
    return None


# ----------------------------------------------------------------------------- TorchScript


def export_torchscript(model: nn.Module, path: str | Path, imgsz: Sequence[int], meta: dict[str, Any]) -> Path:
    """``torch.jit.trace`` + ``torch.jit.freeze`` (BN folded, attributes inlined); ``meta`` as JSON in the
    archive (``torch.jit.load(path, _extra_files={"visionlab.json": ""})``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 3, *imgsz) * 255
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), x))
        torch.jit.save(frozen, str(path), _extra_files={"visionlab.json": json.dumps(meta, default=str)})
    return path


# ----------------------------------------------------------------------------- metadata, images, parity


def export_meta(task: Any, meta: dict[str, Any], model: nn.Module, imgsz: Sequence[int], **extra: Any) -> dict[str, Any]:
    """What an exported file carries so it can be used (and ``load_model`` can read it) without the checkpoint."""
    import visionlab

    return {"task": task.name, "arch": meta["arch"], "arch_kwargs": meta.get("arch_kwargs", {}),
            "labels": task.labels(meta), "imgsz": list(imgsz),
            "input_multiple": int(getattr(model, "input_multiple", 1) or 1),
            "params": int(meta.get("params") or sum(p.numel() for p in model.parameters())),
            "config": meta.get("config", {}), "visionlab_version": visionlab.__version__,
            "source_checkpoint": meta.get("path"), **extra}


def real_images(task: Any, cfg: Any, n: int, dataset: Any | None = None) -> list[torch.Tensor]:
    """Up to ``n`` real images as float 1x3xHxW at ``cfg.imgsz``: from ``source=`` (an image or a folder)
    if given, else spread over ``dataset`` (default: the task's ``cfg.split`` with evaluation transforms)."""
    from visionlab.data.io import IMAGE_SUFFIXES, DataError, read_image

    imgsz = tuple(cfg.imgsz)
    if getattr(cfg, "source", None) and dataset is None:
        root = Path(cfg.source)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"source={cfg.source}: no images there")
        arrays = [task.prepare(read_image(p), imgsz) for p in files[:n]]
        return [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() for a in arrays]
    dataset = dataset if dataset is not None else task.build_dataset(cfg, cfg.split, train=False)
    picks = sorted(set(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int).tolist()))
    out = []
    for i in picks:
        image = dataset[i]["image"].float()[None]
        if image.shape[1] == 1:  # grey datasets: models take RGB (classify's models read luma themselves)
            image = image.expand(-1, 3, -1, -1)
        if tuple(image.shape[-2:]) != imgsz:
            image = F.interpolate(image, size=imgsz, mode="bilinear", align_corners=False)
        out.append(image)
    return out


def calibration_batches(images: list[torch.Tensor], batch: int) -> list[np.ndarray]:
    """1x3xHxW tensors -> NCHW float32 arrays of exactly ``batch`` images (fixed-batch graphs need it)."""
    stacked = torch.cat(images).numpy().astype(np.float32)
    if len(stacked) < batch:  # too few images for one batch: repeat them
        stacked = np.concatenate([stacked] * (-(-batch // len(stacked))))
    usable = len(stacked) // batch * batch
    return [stacked[i:i + batch] for i in range(0, usable, batch)]


def output_parity(reference: Callable[[torch.Tensor], torch.Tensor], candidate: Callable[[torch.Tensor], torch.Tensor],
                  images: list[torch.Tensor]) -> dict[str, float]:
    """Max and mean absolute output difference over ``images`` (one call per image)."""
    worst, total, count = 0.0, 0.0, 0
    with torch.no_grad():
        for x in images:
            a, b = reference(x).float().cpu().numpy(), candidate(x).float().cpu().numpy()
            if a.shape != b.shape:
                raise ValueError(f"output shape {list(b.shape)} differs from PyTorch's {list(a.shape)}")
            d = np.abs(a.astype(np.float64) - b)
            worst, total, count = max(worst, float(d.max())), total + float(d.sum()), count + d.size
    return {"max_abs_diff": worst, "mean_abs_diff": total / max(count, 1), "images": len(images)}


def metric_parity(task: Any, cfg: Any, reference: nn.Module, candidate: nn.Module, max_images: int) -> dict[str, Any]:
    """The task's metrics of both models on (up to ``max_images`` of) the evaluation split."""
    from torch.utils.data import Subset

    from visionlab.engine.evaluator import evaluate, make_eval_loader

    dataset = task.build_dataset(cfg, cfg.split, train=False)
    if 0 < max_images < len(dataset):
        dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, max_images).astype(int).tolist())
    device = torch.device("cpu")
    loader = make_eval_loader(task, dataset, cfg, device, distributed=False)
    ref, _ = evaluate(reference, loader, task, cfg, device, distributed=False)
    got, _ = evaluate(candidate, loader, task, cfg, device, distributed=False)
    key = task.fitness_key
    return {"metric": key, "fitness_mode": task.fitness_mode, "reference": ref[key], "exported": got[key],
            "diff": got[key] - ref[key], "images": len(dataset), "split": cfg.split}


# ----------------------------------------------------------------------------- the command


def default_output(weights: Path, fmt: str) -> Path:
    suffix = {"onnx": ".onnx", "onnx-int8": "_int8.onnx", "torchscript": ".torchscript.pt", "ort": ".ort"}[fmt]
    return weights.with_name(weights.stem + suffix)


def split_overrides(overrides: dict[str, Any], own: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(this command's own keys with defaults filled in, the rest for the task's config)."""
    mine = {k: overrides.get(k, v) for k, v in own.items()}
    return mine, {k: v for k, v in overrides.items() if k not in own}


def run_export(overrides: dict[str, Any]) -> dict[str, Any]:
    """``visionlab export model=CKPT format=...``: writes the file and ``<file>.parity.json``; returns the
    parity record (also printed)."""
    from visionlab.cfg import ConfigError
    from visionlab.engine.evaluator import eval_config
    from visionlab.engine.model_io import check_input_size, load_model, read_any_model_meta, resolve_weights
    from visionlab.engine.onnx_model import OnnxModel, is_onnx_file, write_onnx_meta
    from visionlab.tasks.base import get_task
    from visionlab.utils.runtime import configure_cpu

    opts, rest = split_overrides(overrides, EXPORT_KEYS)
    fmt = str(opts["format"]).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"format={opts['format']}: expected one of {', '.join(FORMATS)}")
    if not rest.get("model"):
        raise ConfigError("export needs model=PATH (a checkpoint or a run folder)")
    if is_onnx_file(rest["model"]):
        raise ConfigError(f"model={rest['model']}: already exported; export from the .safetensors checkpoint")
    weights = resolve_weights(rest["model"])
    task = get_task(read_any_model_meta(weights)["task"])
    rest["model"] = str(weights)
    cfg = eval_config(task, rest, "export")
    configure_cpu(cfg.threads)
    model, meta = load_model(weights, "cpu", task=task)
    check_input_size(model, cfg, meta["arch"])
    imgsz = tuple(cfg.imgsz)
    out = Path(opts["out"]) if opts["out"] else default_output(weights, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    opset = int(opts["opset"])
    record: dict[str, Any] = {"file": str(out), "format": fmt, "checkpoint": str(weights), "imgsz": list(imgsz)}

    if fmt == "torchscript":
        export_torchscript(model, out, imgsz, export_meta(task, meta, model, imgsz, format=fmt))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still the portable format
            scripted = torch.jit.load(str(out))
        record["parity"] = output_parity(model, scripted, real_images(task, cfg, int(opts["max_images"])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = out if fmt == "onnx" else Path(tmp) / "fp32.onnx"
            dynamic_hw = bool(opts["dynamic"])
            export_onnx(model, fp32, imgsz, opset, dynamic_batch=True, dynamic_hw=dynamic_hw)
            if dynamic_hw and (why := check_dynamic_hw(model, fp32, imgsz)):
                record["note"] = f"fixed H/W {list(imgsz)}: dynamic H/W failed {why}"
                export_onnx(model, fp32, imgsz, opset, dynamic_batch=True, dynamic_hw=False)
                dynamic_hw = False
            record.update(opset=opset, dynamic_batch=True, dynamic_hw=dynamic_hw)
            info = export_meta(task, meta, model, imgsz, format=fmt, opset=opset, dynamic_hw=dynamic_hw)
            if fmt == "onnx-int8":
                calib = real_images(task, cfg, int(opts["calib"]), calibration_dataset(task, cfg))
                quantize_static_onnx(fp32, out, calibration_batches(calib, 1))
                info["quantization"] = record["quantization"] = {
                    "method": "static QDQ, per-channel int8 weights, uint8 activations, MinMax",
                    "calibration_images": len(calib), "reduce_range": not vnni_available()}
            write_onnx_meta(out if fmt != "ort" else fp32, info)
            if fmt == "ort":
                optimize_onnx(fp32, out, "basic", ort_format=True)
        exported = OnnxModel(out)
        if fmt == "onnx-int8":
            record["parity"] = metric_parity(task, cfg, model, exported, int(opts["max_images"]))
        else:
            record["parity"] = output_parity(model, exported, real_images(task, cfg, int(opts["max_images"])))
    record["size_mb"] = round(out.stat().st_size / 2**20, 3)
    parity_file = out.with_name(out.name + ".parity.json")
    atomic_write_json(parity_file, record)
    p = record["parity"]
    if "metric" in p:
        console.print(f"{fmt} -> [bold]{out}[/] ({record['size_mb']} MB); {p['metric']} {p['exported']:.4f} vs "
                      f"PyTorch {p['reference']:.4f} (diff {p['diff']:+.4f}, {p['images']} images)")
    else:
        console.print(f"{fmt} -> [bold]{out}[/] ({record['size_mb']} MB); parity vs PyTorch on {p['images']} real "
                      f"images: max abs {p['max_abs_diff']:.3g}, mean abs {p['mean_abs_diff']:.3g}")
    if record.get("note"):
        console.print(f"[yellow]note:[/] {record['note']}")
    return record


def calibration_dataset(task: Any, cfg: Any) -> Any:
    """Calibrate on training images (evaluation transforms; never the images the metric is measured on)
    when the data has a train split; otherwise on the evaluation split, said so."""
    from visionlab.data.io import DataError

    try:
        return task.build_dataset(cfg, "train", train=False)
    except (DataError, FileNotFoundError):  # no train split in this data (a val-only folder)
        console.print(f"[yellow]note:[/] no train split in {cfg.data}: calibrating on split={cfg.split}")
        return task.build_dataset(cfg, cfg.split, train=False)
