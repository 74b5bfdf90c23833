"""Evaluation: ``val`` mode, the per-epoch validation and the end-of-run report."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visionlab.engine import distributed as dist
from visionlab.engine.model_io import load_model
from visionlab.tasks.base import Metrics, Task
from visionlab.utils.files import atomic_write_json
from visionlab.utils.progress import console, track
from visionlab.utils.runtime import configure_cpu, increment_path, peak_memory_mb


def prefetch(dataset: Dataset, indices: list[int]) -> None:
    """Datasets with a RAM cache may define ``prefetch(indices)``: decode exactly what this rank will read
    (under DDP each rank caches only its own share)."""
    if callable(getattr(dataset, "prefetch", None)):
        dataset.prefetch(list(indices))


def make_eval_loader(task: Task, dataset: Dataset, cfg: Any, device: torch.device,
                     distributed: bool = True) -> DataLoader:
    """``distributed``: this rank's shard only (metrics are then reduced); else the whole set."""
    sampler = dist.ShardSampler(len(dataset)) if distributed else dist.ShardSampler(len(dataset), 1, 0)
    prefetch(dataset, list(sampler))
    return DataLoader(
        dataset, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers,
        collate_fn=task.collate, pin_memory=device.type == "cuda",
    )


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, task: Task, cfg: Any, device: torch.device,
             loss_fn: nn.Module | None = None, distributed: bool = True) -> tuple[dict[str, float], Metrics]:
    """Metrics of ``model`` over ``loader``, reduced across DDP ranks if ``distributed`` (then every rank
    must call this); adds ``loss`` if loss_fn is given."""
    model.eval()
    distributed = distributed and dist.world_size() > 1
    metrics = task.new_metrics(cfg, device, sync=distributed)
    loss_sum, seen = 0.0, 0
    for batch in track(loader, total=len(loader), description="  val"):
        batch = task.preprocess(batch, device, cfg)
        with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
            outputs = model(batch["image"])
        metrics.update(outputs.float(), batch)
        if loss_fn is not None and task.eval_loss_applies(outputs, batch):
            loss_sum += loss_fn(outputs.float(), batch).item() * len(outputs)
            seen += len(outputs)
    results = metrics.compute()
    if loss_fn is not None:
        loss_sum, seen = dist.sum_across_ranks([loss_sum, seen], device) if distributed else (loss_sum, seen)
        if seen:
            results["loss"] = loss_sum / seen
    return results, metrics


@torch.no_grad()
def inference_ms(model: nn.Module, imgsz: tuple[int, int], device: torch.device, warmup: int = 3,
                 repeats: int = 10) -> dict[str, float]:
    """Batch-1 latency: warm-up, CUDA sync, median and spread of ``repeats`` timed calls."""
    model.eval()
    x = torch.randn(1, 3, *imgsz, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p95": times[min(len(times) - 1, int(0.95 * len(times)))],
            "min": times[0]}


def finish_run(task: Task, cfg: Any, run_dir: Path, val_set: Dataset | None, device: torch.device,
               train_seconds: float, tracker: Any) -> dict[str, Any]:
    """Evaluate weights/best on the val split, write plots and results.json, log them to the tracker."""
    from visionlab.plots import plot_curves

    plots: list[Path] = []
    if cfg.plots and (run_dir / "metrics.csv").is_file():
        plots.append(plot_curves(run_dir / "metrics.csv", run_dir / "curves.png"))
    best = run_dir / "weights" / "best.safetensors"
    model, meta = load_model(best, device)
    results: dict[str, Any] = {"task": task.name, "fitness_key": task.fitness_key, "fitness_mode": task.fitness_mode, "model": meta["arch"], "arch_kwargs": meta["arch_kwargs"],
                               "params": meta["params"], "best_epoch": meta["epoch"], "epochs": cfg.epochs,
                               "train_time_s": round(train_seconds, 1), "data": cfg.data, "imgsz": list(cfg.imgsz)}
    if val_set is not None:
        # rank 0 alone (after the process group is gone), over the whole val set
        loader = make_eval_loader(task, val_set, cfg, device, distributed=False)
        metrics, state = evaluate(model, loader, task, cfg, device, distributed=False)
        results["val"] = metrics
        state.report(console)
        if cfg.plots:
            plots += state.save_plots(run_dir)
            plots += task.save_visuals(model, val_set, run_dir, cfg, device, metrics=state)
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    results["peak_mem_mb"] = max((float(r["peak_mem_mb"]) for r in rows), default=peak_memory_mb(device))
    results["inference_ms"] = inference_ms(model, tuple(cfg.imgsz), device)
    atomic_write_json(run_dir / "results.json", results)
    tracker.log_final(results, plots, best)
    console.print(f"results, plots and weights in [bold]{run_dir}[/]")
    return results


def eval_config(task: Task, overrides: dict[str, Any], mode: str) -> Any:
    """Config for val/predict/bench: needs model=. Precedence: defaults < the checkpoint's training settings
    (the keys ``task.inherit_from_checkpoint`` lists: data, sizes, protocol) < cfg= file < command line.
    Outputs go to project/<mode> unless name= is given."""
    from visionlab.cfg import ConfigError, build_config
    from visionlab.engine.model_io import read_model_meta

    overrides = dict(overrides)
    if not overrides.get("model"):
        raise ConfigError(f"{mode} needs model=PATH (a weights file or a run folder)")
    meta = read_model_meta(overrides["model"], task)
    trained = dict(meta.get("config") or {})
    if "imgsz" not in trained and meta.get("imgsz"):  # e.g. an official release's weights: its native size
        trained["imgsz"] = meta["imgsz"]
    inherited = {k: trained[k] for k in task.inherit_from_checkpoint if k in trained}
    overrides.setdefault("name", mode)
    return build_config(task.config_cls, task.name, overrides, inherited=inherited)


def run_val(task: Task, cfg: Any) -> dict[str, float]:
    """``visionlab TASK val model=... data=... split=...``: prints and returns the metrics."""
    from visionlab.engine.model_io import check_input_size

    device = dist.setup(cfg.device)
    configure_cpu(cfg.threads)
    model, meta = load_model(cfg.model, device, task=task)
    check_input_size(model, cfg, meta["arch"])
    model = task.inference_model(model, cfg)
    dataset = task.build_dataset(cfg, cfg.split, train=False)
    metrics, state = evaluate(model, make_eval_loader(task, dataset, cfg, device), task, cfg, device)
    if dist.is_main():
        console.print(f"[bold]{task.name} val[/] {meta['path']} on {cfg.data} split={cfg.split} "
                      f"({len(dataset)} images, imgsz {list(cfg.imgsz)})")
        state.report(console)
        if cfg.plots:
            save_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
            save_dir.mkdir(parents=True, exist_ok=True)
            state.save_plots(save_dir)
            task.save_visuals(model, dataset, save_dir, cfg, device, metrics=state)
            atomic_write_json(save_dir / "metrics.json", {"model": meta["path"], "data": cfg.data,
                                                           "split": cfg.split, **metrics})
            console.print(f"plots and metrics.json in {save_dir}")
    dist.cleanup()
    return metrics
