"""The training loop, task-agnostic and readable top to bottom (nanoGPT style).

One run = one folder ``project/name`` holding config.yaml, env.json, train.log, metrics.csv, plots and
weights/{best,last}.safetensors. Works single-process and under ``torchrun`` (DDP; rank 0 writes).
Resume is exact: ``last`` carries optimizer/scheduler/scaler state and the history, and every epoch
re-seeds its shuffle and augmentation from (seed, epoch), so a resumed run replays the same batches.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, RandomSampler

from visionlab.engine import distributed as dist
from visionlab.engine.evaluator import evaluate, make_eval_loader, prefetch
from visionlab.engine.model_io import check_input_size, load_model, looks_like_checkpoint
from visionlab.engine.tracking import Tracker
from visionlab.models.registry import create_model
from visionlab.tasks.base import Task, better
from visionlab.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from visionlab.utils.files import atomic_write_text
from visionlab.utils.progress import console, make_progress
from visionlab.utils.runtime import (
    configure_cpu, ensure_writable, increment_path, peak_memory_mb, seed_everything, write_env,
)

log = logging.getLogger("visionlab")


# settings a resumed run may change; everything else comes from the interrupted run's config.yaml
# (not workers: the augmentation stream depends on the worker count, so it would no longer replay exactly)
RESUME_OVERRIDABLE = ("epochs", "patience", "device", "threads", "mlflow", "mlflow_uri", "tensorboard", "plots")
RESUME_NAMING = ("resume", "model", "project", "name")  # how the interrupted run is named


def train_config(task: Task, overrides: dict[str, Any]) -> Any:
    """The config of a training run. With ``resume=true`` it is the interrupted run's own config.yaml
    (the run is named by ``model=RUN_DIR`` / ``model=.../weights/last.safetensors`` or by project/name)."""
    from visionlab.cfg import ConfigError, build_config, read_yaml

    if not overrides.get("resume"):
        return build_config(task.config_cls, task.name, overrides)
    refused = sorted(k for k in overrides if k not in RESUME_OVERRIDABLE + RESUME_NAMING)
    if refused:
        build_config(task.config_cls, task.name, {k: v for k, v in overrides.items() if k != "resume"})  # unknown keys
        raise ConfigError(f"resume=true continues the run with its own settings: {', '.join(refused)} cannot change "
                          f"(a resumed run may change only {', '.join(RESUME_OVERRIDABLE)}); start a new run "
                          "instead, e.g. with model=RUN/weights/last.safetensors to fine-tune from it")
    ref = overrides.get("model")
    if ref and Path(ref).is_file():
        run_dir = Path(ref).parent.parent
    elif ref and Path(ref).is_dir():
        run_dir = Path(ref)
    elif ref and (looks_like_checkpoint(str(ref)) or "/" in str(ref) or "\\" in str(ref)):
        # a path or a weights file name that names nothing (a bare word is a model name)
        raise ConfigError(f"resume=true model={ref}: no such run folder or checkpoint")
    else:
        defaults = build_config(task.config_cls, task.name, {k: v for k, v in overrides.items() if k != "resume"})
        run_dir = Path(defaults.project) / defaults.name
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "weights" / "last.safetensors").is_file():
        raise ConfigError(f"resume=true: {run_dir} is not an interrupted run (needs config.yaml and "
                          "weights/last.safetensors); name it with model=RUN_DIR or project=... name=...")
    saved = read_yaml(run_dir / "config.yaml")
    saved.update({k: v for k, v in overrides.items() if k in RESUME_OVERRIDABLE})
    saved.update({"resume": True, "project": str(run_dir.parent), "name": run_dir.name})
    saved.pop("task", None)
    return build_config(task.config_cls, task.name, saved)


def _run_dir(cfg: Any) -> Path:
    base = Path(cfg.project) / cfg.name
    if cfg.resume:
        if not (base / "weights" / "last.safetensors").is_file():
            raise CheckpointError(f"resume=true but {base}/weights/last.safetensors does not exist")
        return base
    return increment_path(base, cfg.exist_ok)


def _setup_logging(run_dir: Path) -> None:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers = [handler]
    log.setLevel(logging.INFO)


def param_groups(model: nn.Module, cfg: Any) -> list[dict[str, Any]]:
    """Optimizer groups: the model's ``encoder`` at ``lr * encoder_lr`` (DAv2 trains its encoder at 0.1x),
    no weight decay on norms, biases (1-D tensors, as in timm / nanoGPT) and what the model's (or a
    submodule's) ``no_weight_decay()`` names (position embeddings, class tokens)."""
    from visionlab.cfg import ConfigError

    skip_decay: set[str] = set()
    for prefix, module in model.named_modules():
        if callable(getattr(module, "no_weight_decay", None)):
            skip_decay |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    encoder_ids: set[int] = set()
    if cfg.encoder_lr != 1.0:
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ConfigError(f"encoder_lr={cfg.encoder_lr}: model {cfg.model} has no encoder to give its own lr")
        encoder_ids = {id(p) for p in encoder.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in encoder_ids, p.ndim > 1 and name not in skip_decay), []).append(p)
    return [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
             "lr": cfg.lr * (cfg.encoder_lr if in_encoder else 1.0)} for (in_encoder, decay), params in groups.items()]


def _build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, alpha=0.9, eps=1e-6)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def lr_factor(step: int, warmup_steps: int, total_steps: int, lrf: float, schedule: str = "cosine") -> float:
    """Linear warm-up from 0 to 1, then (per optimizer step) cosine decay to lrf, a linear ramp down to lrf
    (``onecycle``) or a constant 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle":
        return 1 - (1 - lrf) * progress
    return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_average(decay: float) -> Any:
    """EMA update for ``AveragedModel``, with timm's warm-up: decay min(d, (1+n)/(10+n)) so the first
    updates do not anchor the average to the random initialisation."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1 - d)
        for e, p in zip(ema_params, params):  # integer buffers (BatchNorm's step count): the latest value
            if not e.is_floating_point():
                e.copy_(p)

    return update


class _Subset(torch.utils.data.Subset):
    """A Subset that still answers the dataset's own attributes (transform, frequencies ...)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["dataset"], name)

    def prefetch(self, indices: list[int]) -> None:
        prefetch(self.dataset, [self.indices[i] for i in indices])


def _datasets(task: Task, cfg: Any) -> tuple[Any, Any]:
    """(train set, val set or None). ``overfit=N``: the first N training images, unaugmented, as both."""
    if cfg.overfit:
        plain = cfg.model_copy(update={"augment": False})
        n = cfg.overfit
        train_set = task.build_dataset(plain, "train", train=True)
        val_set = task.build_dataset(plain, "train", train=False)
        keep = list(range(min(n, len(train_set))))
        return _Subset(train_set, keep), _Subset(val_set, keep)
    train_set = task.build_dataset(cfg, "train", train=True)
    return train_set, task.build_dataset(cfg, cfg.split, train=False) if cfg.val else None


def _worker_init(worker_id: int) -> None:
    # each worker's seed derives from the loader's per-epoch generator -> reproducible augmentation
    import random

    import numpy as np

    seed = (torch.initial_seed() + 7919 * dist.rank()) % 2**32  # ranks must not share augmentations
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def _seed_epoch(cfg: Any, epoch: int, loader: DataLoader, generator: torch.Generator) -> None:
    seed = cfg.seed * 1000 + epoch
    torch.manual_seed(seed)
    generator.manual_seed(seed)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    transform = getattr(loader.dataset, "transform", None)
    if cfg.workers == 0 and transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed + 7919 * dist.rank())


def _start_model(task: Task, cfg: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model (+ pretrained encoder), or fine-tuning from a checkpoint; input sizes are checked
    against the model's own ``input_multiple`` either way."""
    if looks_like_checkpoint(cfg.model):
        model, meta = load_model(cfg.model, "cpu", task=task)
        arch = {"arch": meta["arch"], "arch_kwargs": meta["arch_kwargs"]}
    else:
        name, kwargs = task.model_spec(cfg)
        model = create_model(name, task=task.name, **kwargs)
        task.load_pretrained(model, cfg)
        arch = {"arch": name, "arch_kwargs": kwargs}
    check_input_size(model, cfg, arch["arch"])
    return model.train(), arch


def _load_teacher(task: Task, cfg: Any, device: torch.device) -> nn.Module | None:
    """The frozen teacher of ``teacher=``: eval mode, no gradients, outside DDP (each rank its own copy)."""
    if not cfg.teacher:
        return None
    teacher, _ = load_model(cfg.teacher, device, task=task)
    teacher.requires_grad_(False)
    return teacher.to(memory_format=torch.channels_last) if cfg.channels_last else teacher


def train(task: Task, cfg: Any) -> Path:
    """Train ``task`` with config ``cfg``; returns the run folder."""
    from visionlab.cfg import ConfigError

    if cfg.batch % dist.world_size():
        raise ConfigError(f"batch={cfg.batch} is the global batch and must split evenly over "
                          f"{dist.world_size()} ranks (e.g. batch={dist.world_size() * max(1, cfg.batch // dist.world_size())})")
    device = dist.setup(cfg.device)
    configure_cpu(cfg.threads)
    seed_everything(cfg.seed, cfg.deterministic)
    main = dist.is_main()

    # ---- data, model, optimizer, teacher first: settings that cannot work fail before a run folder takes the name ----
    if cfg.resume:
        _run_dir(cfg)  # resume=true without a last checkpoint: say so before any data is read
    train_set, val_set = _datasets(task, cfg)
    model, arch = _start_model(task, cfg)
    model = model.to(device)
    if cfg.channels_last:  # NHWC: ~25% faster for depthwise/ConvNeXt-style encoders on CPU and GPU
        model = model.to(memory_format=torch.channels_last)
    optimizer = _build_optimizer(model, cfg)  # e.g. encoder_lr on a model without an encoder is refused here
    teacher = _load_teacher(task, cfg, device)

    # ---- run folder (rank 0 decides its name, checks the disk, records config and environment) ----
    run_dir = None
    if main:
        run_dir = _run_dir(cfg)
        ensure_writable(run_dir)
        (run_dir / "weights").mkdir(exist_ok=True)
        _setup_logging(run_dir)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        write_env(run_dir / "env.json")
    run_dir = Path(dist.broadcast_object(str(run_dir)))

    # ---- data loaders ----
    generator = torch.Generator()
    sampler = (dist.FixedShardSampler(len(train_set), cfg.seed)
               if dist.world_size() > 1 else RandomSampler(train_set, generator=generator))
    prefetch(train_set, list(range(len(train_set))) if isinstance(sampler, RandomSampler) else sampler.indices)
    per_rank = len(sampler)  # batch is global: each rank takes its share
    batch = min(cfg.batch // dist.world_size(), per_rank)
    train_loader = DataLoader(
        train_set, batch_size=batch, sampler=sampler, num_workers=cfg.workers, collate_fn=task.collate,
        drop_last=per_rank >= 2 * batch,  # BatchNorm dislikes a last batch of 1
        worker_init_fn=_worker_init, generator=generator, pin_memory=device.type == "cuda",
    )
    val_loader = make_eval_loader(task, val_set, cfg, device) if val_set is not None else None

    # ---- DDP, EMA, schedule, loss ----
    ddp_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if dist.world_size() > 1 else model
    ema = AveragedModel(model, multi_avg_fn=ema_average(cfg.ema), use_buffers=True) if cfg.ema else None
    eval_model = ema.module if ema is not None else model  # what is validated and saved
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = min(int(cfg.warmup_epochs * steps_per_epoch), total_steps // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, cfg.lrf, cfg.schedule))
    use_amp = cfg.amp and device.type == "cuda"  # bf16/fp16 autocast is slower than fp32 on most CPUs
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = task.build_loss(cfg, train_set).to(device)
    n_params = sum(p.numel() for p in model.parameters())

    # ---- resume ----
    start_epoch, best_fitness, stale, history, train_seconds = 0, None, 0, [], 0.0
    if cfg.resume:
        state, meta, ts = load_checkpoint(run_dir / "weights" / "last.safetensors", with_train_state=True)
        model.load_state_dict(ts["raw_model"] if ema is not None else state)
        if ema is not None:
            ema.module.load_state_dict(state)
            ema.n_averaged.fill_(ts["ema_updates"])
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        if use_amp and ts["scaler"]:  # a CPU run saved an empty scaler state
            scaler.load_state_dict(ts["scaler"])
        start_epoch, best_fitness, stale = ts["epoch"] + 1, ts["best_fitness"], ts["stale"]
        history, train_seconds = ts["history"], ts["train_seconds"]
        if main:
            console.print(f"resuming {run_dir} from epoch {start_epoch + 1}/{cfg.epochs}")

    tracker = Tracker(cfg, run_dir, task.name) if main else None
    if tracker:
        tracker.start(cfg.model_dump(mode="json"))
        console.print(f"[bold]{task.name} train[/] -> {run_dir}  ({arch['arch']}, {n_params / 1e6:.2f}M params, "
                      f"{len(train_set)} train / {len(val_set) if val_set else 0} val images, device {device})")
        log.info("run %s, %s, params %d, device %s", run_dir, arch, n_params, device)

    meta = {"task": task.name, **arch, "imgsz": list(cfg.imgsz), "params": n_params,
            "config": cfg.model_dump(mode="json")}
    for epoch in range(start_epoch, cfg.epochs):
        # ---- one epoch of training ----
        _seed_epoch(cfg, epoch, train_loader, generator)
        ddp_model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0, loss_sum, seen = time.perf_counter(), 0.0, 0
        with make_progress() as progress:
            bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
            for batch in train_loader:
                batch = task.preprocess(batch, device, cfg)
                images = batch["image"]
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, enabled=use_amp):
                    if teacher is not None:
                        with torch.no_grad():
                            batch["teacher"] = teacher(images).float()
                    loss = loss_fn(ddp_model(images), batch)
                # every rank learns of a non-finite loss on any rank, so all stop together (none hangs)
                if not dist.all_ranks_true(bool(torch.isfinite(loss.detach())), device):
                    raise FloatingPointError(f"loss became non-finite ({loss.item()} on rank {dist.rank()}) at "
                                             f"epoch {epoch + 1}; try a lower lr")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                loss_sum += loss.item() * len(images)
                seen += len(images)
                progress.update(bar, advance=1, info=f"loss {loss_sum / seen:.4f}")
        epoch_time = time.perf_counter() - t0
        train_seconds += epoch_time
        row: dict[str, Any] = {"epoch": epoch + 1, "train/loss": dist.mean_across_ranks(loss_sum / seen, device),
                               "lr": optimizer.param_groups[0]["lr"]}

        # ---- validation (every rank evaluates its shard; metrics are reduced) ----
        if val_loader is not None:
            dist.broadcast_buffers(eval_model)  # BatchNorm statistics drift apart per rank: evaluate rank 0's
            metrics, _ = evaluate(eval_model, val_loader, task, cfg, device, loss_fn=loss_fn)
            if task.fitness_key not in metrics:
                raise RuntimeError(f"task {task.name}: metrics lack its fitness key '{task.fitness_key}' "
                                   f"(got {', '.join(metrics)})")
            row.update({f"val/{k}" if k == "loss" else k: v for k, v in metrics.items()})
        row.update({"time_s": round(epoch_time, 2), "peak_mem_mb": round(peak_memory_mb(device), 1)})
        history.append(row)
        # without validation there is no fitness: the best checkpoint is the last one
        improved = better(task, row[task.fitness_key], best_fitness) if val_loader is not None else True
        best_fitness, stale = (row.get(task.fitness_key), 0) if improved else (best_fitness, stale + 1)

        # ---- checkpoints, metrics.csv, tracking (rank 0) ----
        if main:
            epoch_meta = {**meta, "epoch": epoch + 1, "metrics": row}
            best_path = run_dir / "weights" / "best.safetensors"
            # best is written only on improvement (or if none exists yet, e.g. NaN metrics): never a worse model
            if improved or not best_path.is_file():
                save_checkpoint(best_path, eval_model.state_dict(), epoch_meta)
            resume_state = {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best_fitness": best_fitness, "stale": stale,
                "history": history, "train_seconds": train_seconds,
            }
            if ema is not None:  # the weights file holds the EMA; training resumes from the raw weights
                resume_state.update({"raw_model": model.state_dict(), "ema_updates": int(ema.n_averaged)})
            save_checkpoint(run_dir / "weights" / "last.safetensors", eval_model.state_dict(), epoch_meta, resume_state)
            _write_metrics_csv(run_dir / "metrics.csv", history)
            tracker.log_epoch(row, epoch + 1)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                              if k in ("train/loss", "val/loss", *task.summary_keys))
            console.print(f"epoch {epoch + 1}: {shown}  ({epoch_time:.1f}s){'  *best*' if improved else ''}")
            log.info("epoch %d %s", epoch + 1, row)
        if 0 < cfg.patience <= stale:  # patience=0: no early stopping
            if main:
                console.print(f"early stop: no improvement in {cfg.patience} epochs")
            break

    # ---- final evaluation of the best weights with plots: rank 0 alone, after leaving the process group
    # (no rank waits on a collective while it runs, however long it takes) ----
    dist.barrier()
    dist.cleanup()
    if main:
        from visionlab.engine.evaluator import finish_run

        finish_run(task, cfg, run_dir, val_set, device, train_seconds, tracker)
        tracker.close()
    return run_dir


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    lines = [",".join(keys)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row.get(k), float)
                              else str(row[k]) for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")
