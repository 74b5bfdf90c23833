"""``predict`` mode: load sources in a DataLoader (batched, decoded in workers) -> ``Task.infer`` ->
``Task.write_prediction``. Under torchrun every rank takes its own shard of the images (each image exactly
once, as for pseudo-labelling); rank 0 merges the summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from visionlab.data.io import DataError, read_image
from visionlab.engine import distributed as dist
from visionlab.engine.model_io import check_input_size, load_model
from visionlab.tasks.base import Task
from visionlab.utils.files import atomic_write_json
from visionlab.utils.progress import console, track
from visionlab.utils.runtime import configure_cpu, increment_path


class ImageFiles(Dataset):
    """(path, output name) pairs -> decoded images; an unreadable file becomes a reason, not a crash."""

    def __init__(self, items: list[tuple[Path, str]], upright: bool = False):
        self.items, self.upright = items, upright

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, name = self.items[i]
        try:
            return {"path": str(path), "name": name, "image": read_image(path, self.upright), "error": None}
        except DataError as e:
            return {"path": str(path), "name": name, "image": None, "error": str(e)}


def _as_list(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return samples  # images differ in size: infer resizes them, so no stacking here


def image_loader(items: list[tuple[Path, str]], batch: int, workers: int, upright: bool = False) -> DataLoader:
    """``upright``: EXIF orientation applied (predict on photos; never for pseudo labels, which must match the
    pixels a dataset reads)."""
    return DataLoader(ImageFiles(items, upright), batch_size=batch, num_workers=workers, collate_fn=_as_list)


def run_predict(task: Task, cfg: Any) -> dict[str, Any]:
    """``visionlab TASK predict model=... source=...``; a DataError if no source image could be read."""
    from visionlab.engine.sources import list_sources, output_names

    device = dist.setup(cfg.device)
    configure_cpu(cfg.threads)
    model, meta = load_model(cfg.model, device, task=task)
    check_input_size(model, cfg, meta["arch"])
    model = task.inference_model(model, cfg)
    sources = list_sources(cfg.source, task)
    items = list(zip(sources, output_names(sources)))[dist.rank()::dist.world_size()]
    save_dir = Path(dist.broadcast_object(str(increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok))))
    save_dir.mkdir(parents=True, exist_ok=True)
    done, skipped, records = [], [], []
    loader = image_loader(items, cfg.batch, cfg.workers, upright=True)  # as the server: phone photos upright
    for batch in track(loader, total=len(loader), description="predict"):
        for sample in batch:
            if sample["error"]:
                skipped.append(sample["error"])
                console.print(f"[yellow]skipped[/] {sample['error']}", soft_wrap=True)
        good = [s for s in batch if s["error"] is None]
        results = task.infer(model, [s["image"] for s in good], tuple(cfg.imgsz), device,
                             keep_aspect=cfg.keep_aspect)
        for sample, result in zip(good, results):
            records.append(task.write_prediction(result, sample["image"], sample["name"], save_dir, cfg))
            done.append(sample["path"])
    parts = dist.gather_objects({"done": done, "skipped": skipped, "records": records})
    summary: dict[str, Any] = {}
    if dist.is_main():
        merged = task.summarize([r for p in parts for r in p["records"]], cfg)
        summary = {"model": meta["path"], "source": cfg.source, "save_dir": str(save_dir),
                   "images": sum(len(p["done"]) for p in parts), "skipped": [s for p in parts for s in p["skipped"]],
                   "per_rank": [p["done"] for p in parts], **merged}
        atomic_write_json(save_dir / "summary.json", summary)
        if summary["images"]:
            console.print(f"{summary['images']} predictions in [bold]{save_dir}[/]"
                          + (f", {len(summary['skipped'])} skipped" if summary["skipped"] else ""))
            for key, value in merged.items():
                console.print(f"{key}: {json.dumps(value)}")
    total = dist.broadcast_object(summary.get("images", 0))
    dist.cleanup()
    if not total:
        raise DataError(f"source={cfg.source}: none of the {len(sources)} image(s) could be read "
                        f"(first problem: {(summary.get('skipped') or skipped or ['?'])[0]})")
    return summary
