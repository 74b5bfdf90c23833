"""Training-step timing of every registered depth model: forward + DepthLoss + backward + AdamW step on
random images, median over a few steps after warm-up, at batch 8 and 16 and one stated image size.
Prints a markdown table and writes it into the ``depth-timing`` block of docs/benchmarks.md (``--doc ''``: print
only).

    python benchmarks/depth_timing.py [--imgsz 224] [--batches 8 16] [--steps 3] [--models dpt_vits ...]

224 is a multiple of both 14 (ViT patches) and 32 (CNN strides), so every model runs at the same size.
ViT-L at batch 16 needs several GB of RAM and minutes per step on a 2-core CPU: pick --models to skip it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from doc_block import write_doc_block

REPO = Path(__file__).resolve().parents[1]


def time_model(name: str, batch: int, imgsz: tuple[int, int], steps: int, warmup: int) -> dict[str, float]:
    """Median / min seconds of one optimizer step (forward, loss, backward, AdamW) of model ``name``."""
    import torch

    from visionlab.losses.depth import DepthLoss
    from visionlab.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name).train().to(memory_format=torch.channels_last)
    multiple = int(getattr(model, "input_multiple", 1) or 1)  # e.g. 14 for the ViTs: round to the nearest fit
    imgsz = tuple(multiple * max(1, round(s / multiple)) for s in imgsz)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DepthLoss()
    images = (torch.rand(batch, 3, *imgsz) * 255).contiguous(memory_format=torch.channels_last)
    batch_labels = {"target": torch.rand(batch, 1, *imgsz) * 10 + 0.5,
                    "valid": torch.ones(batch, 1, *imgsz, dtype=torch.bool), "space": 0}
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = loss_fn(model(images), batch_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    return {"median_s": statistics.median(times), "min_s": min(times), "params_M": params / 1e6,
            "size": f"{imgsz[0]}x{imgsz[1]}"}


def main() -> int:
    from visionlab.models import depth_cnn, dpt  # noqa: F401  (register the depth models)
    from visionlab.models.registry import list_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, nargs="+", default=[224], help="H [W]; multiple of 14 and 32: 224, 448")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per (model, batch); the median is reported")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--models", nargs="+", default=None, help=f"default: all of {list_models('depth')}")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="'' = print the table only")
    args = ap.parse_args()

    import torch

    from visionlab.utils.runtime import environment_info

    if args.threads:
        torch.set_num_threads(args.threads)
    imgsz = (args.imgsz[0], args.imgsz[-1])
    models = args.models or list_models("depth")
    env = environment_info()
    lines = [
        f"### Depth models: training step time at {imgsz[0]}x{imgsz[1]}",
        "",
        f"Command: `python benchmarks/depth_timing.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} ({torch.get_num_threads()} threads), "
        f"{'GPU ' + ', '.join(env['gpus']) if env['gpus'] else 'no GPU'}; run {time.strftime('%Y-%m-%d')}. "
        f"One step = forward + DepthLoss (SSI + gradient matching) + backward + AdamW, fp32, channels-last; "
        f"median of {args.steps} steps after {args.warmup} warm-up. Sizes that are not a multiple of a model's "
        "input_multiple are rounded to the nearest one (see the input column).",
        "",
        "| model | params | input | " + " | ".join(f"batch {b}: s/step | batch {b}: images/s" for b in args.batches)
        + " |",
        "|---|---|---|" + "---|---|" * len(args.batches),
    ]
    for name in models:
        cells, params, size = [], None, None
        for b in args.batches:
            r = time_model(name, b, imgsz, args.steps, args.warmup)
            params, size = r["params_M"], r["size"]
            cells += [f"{r['median_s']:.2f}", f"{b / r['median_s']:.1f}"]
            print(f"  {name} batch {b}: {r['median_s']:.2f} s/step (min {r['min_s']:.2f})", file=sys.stderr, flush=True)
        lines.append(f"| {name} | {params:.1f}M | {size} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.doc:
        write_doc_block(Path(args.doc), "depth-timing", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
