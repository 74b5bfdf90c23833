"""``visionlab data bench``: how many training images/s the data pipeline delivers with these settings, up to
the model's input (``Task.preprocess`` included: batched augmentation on tensors happens there)."""

from __future__ import annotations

import time
from typing import Any

from torch.utils.data import DataLoader

from visionlab.tasks.base import Task
from visionlab.utils.progress import console


def bench(task: Task, cfg: Any, batches: int = 20) -> dict[str, float]:
    from visionlab.utils.runtime import configure_cpu, select_device

    configure_cpu(cfg.threads)
    device = select_device(cfg.device)
    t0 = time.perf_counter()
    dataset = task.build_dataset(cfg, "train", train=True)
    build_s = time.perf_counter() - t0
    loader = DataLoader(dataset, batch_size=cfg.batch, shuffle=True, num_workers=cfg.workers,
                        collate_fn=task.collate, drop_last=False, persistent_workers=cfg.workers > 0)
    iterator = iter(loader)
    n_batches = min(batches, len(loader) - 1) if len(loader) > 1 else 1
    task.preprocess(next(iterator), device, cfg)  # warm-up: worker start-up is not throughput
    t0, images = time.perf_counter(), 0
    for _ in range(n_batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        images += len(task.preprocess(batch, device, cfg)["image"])
    rate = images / (time.perf_counter() - t0)
    result = {"images_per_s": rate, "dataset_build_s": build_s, "images": len(dataset)}
    console.print(f"data={cfg.data} imgsz={list(cfg.imgsz)} augment={cfg.augment} cache={cfg.cache} "
                  f"workers={cfg.workers} batch={cfg.batch}: [bold]{rate:.1f} images/s[/] "
                  f"(dataset of {len(dataset)} built in {build_s:.1f}s)")
    return result
