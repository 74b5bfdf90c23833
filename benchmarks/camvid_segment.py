"""CamVid benchmark: train the default recipe on ../shared/data/camvid train, report val mIoU (7
categories), wall time, and data-loading / training images/s. Writes a section of docs/benchmarks.md.

    python benchmarks/camvid_segment.py [--shared ../shared] [key=value overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from doc_block import write_doc_block
from run_curve import training_curve

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "benchmarks" / "camvid_recipe.yaml"
DOC_BLOCK = "camvid-segment"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", default=os.environ.get("VISIONLAB_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--project", default=str(REPO / "runs" / "bench"))
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--from-run", default=None, help="report an existing run folder of this recipe instead of training")
    ap.add_argument("overrides", nargs="*", help="key=value settings on top of the recipe")
    args = ap.parse_args()
    camvid = Path(args.shared) / "data" / "camvid"
    if not (camvid / "train").is_dir():
        print(f"skip: CamVid not found at {camvid} (pass --shared or set VISIONLAB_SHARED)")
        return 0

    import torch

    import visionlab
    from visionlab.cfg import build_config, parse_overrides
    from visionlab.engine.databench import bench
    from visionlab.tasks.base import get_task
    from visionlab.utils.runtime import environment_info

    overrides = {"cfg": str(RECIPE), "data": f"camvid:{camvid}", "project": args.project, "name": "camvid",
                 "mlflow": False, **parse_overrides(args.overrides)}
    task = get_task("segment")
    loader_rate = bench(task, build_config(task.config_cls, "segment", dict(overrides)), batches=30)

    if args.from_run:  # report an existing run of this recipe (e.g. after editing the report format)
        run_dir, wall = Path(args.from_run), None
    else:
        t0 = time.perf_counter()
        run_dir = visionlab.train("segment", **overrides)
        wall = time.perf_counter() - t0
    res = json.loads((run_dir / "results.json").read_text())
    cfg = build_config(task.config_cls, "segment", dict(overrides))
    n_train = len(list((camvid / "train").glob("*.png")))
    # cumulative training time at the end of each epoch: when was the best checkpoint (the reported
    # model) reached, and when did val mIoU first reach 0.80
    curve = training_curve(run_dir, "miou")
    epochs_done = curve[-1][0]
    best_at = next(t for e, t, _ in curve if e == res["best_epoch"])
    first80 = next(((e, t) for e, t, m in curve if m >= 0.80), None)
    train_rate = n_train * epochs_done / res["train_time_s"]
    env = environment_info()
    iou = {k.split("/")[1]: v for k, v in res["val"].items() if k.startswith("iou/")}
    lines = [
        "## Segmentation: CamVid (train 367 -> val 101), 8 Cityscapes categories",
        "",
        f"Command: `python benchmarks/camvid_segment.py {' '.join(args.overrides)}`".rstrip() + " (recipe: "
        "`benchmarks/camvid_recipe.yaml`)",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, "
        f"{'GPU ' + ', '.join(env['gpus']) if env['gpus'] else 'no GPU'}; run {time.strftime('%Y-%m-%d')}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| model | {res['model']} ({res['params'] / 1e6:.2f}M params), pretrained={cfg.pretrained} |",
        f"| input size | train crops {list(cfg.crop or cfg.imgsz)} of images resized to {list(cfg.imgsz)}; "
        f"eval on whole {cfg.imgsz[0]}x{cfg.imgsz[1]} images, metrics on the native 360x480 labels |",
        f"| epochs | {epochs_done} (best epoch {res['best_epoch']}) |",
        f"| **val mIoU (7 categories)** | **{res['val']['miou']:.4f}** |",
        f"| pixel accuracy | {res['val']['pixel_acc']:.4f} |",
        f"| training time, all {epochs_done} epochs (per-epoch validation not included) | {res['train_time_s'] / 60:.1f} min |",
        f"| training time until the best checkpoint (epoch {res['best_epoch']}, the reported model) | {best_at / 60:.1f} min |",
        f"| first epoch with val mIoU >= 0.80 | "
        + (f"epoch {first80[0]}, after {first80[1] / 60:.1f} min |" if first80 else "never |"),
        *([f"| total wall time (caching, training, final eval, plots) | {wall / 60:.1f} min |"] if wall else []),
        f"| data loading (augmented, workers={cfg.workers}) | {loader_rate['images_per_s']:.1f} images/s |",
        f"| training throughput | {train_rate:.2f} images/s |",
        f"| peak memory (RSS) | {res['peak_mem_mb']:.0f} MB |",
        f"| inference, batch 1, eager fp32 | {res['inference_ms']['p50']:.1f} ms (p50), {res['inference_ms']['p95']:.1f} ms (p95) |",
        "",
        "| category | " + " | ".join(iou) + " |",
        "|---|" + "---|" * len(iou),
        "| IoU | " + " | ".join(f"{v:.3f}" for v in iou.values()) + " |",
        "",
        f"Target: val mIoU >= 0.80 within 30 minutes of CPU training -> "
        f"{'met' if res['val']['miou'] >= 0.80 and best_at <= 1800 else 'NOT met'} (the reported checkpoint "
        f"took {best_at / 60:.1f} min of training). Per-epoch numbers: `{run_dir.name}/metrics.csv` of the run.",
    ]
    write_doc_block(Path(args.doc), DOC_BLOCK, lines)
    print("\n".join(lines))
    print(f"run folder: {run_dir}; torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
