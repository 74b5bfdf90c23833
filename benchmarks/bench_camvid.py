"""Inference variants of the CamVid recipe's model (FPN + EfficientNet-Lite0, trained at 352x480): batch-1
latency, throughput, size, memory and val mIoU re-measured per variant, with `visionlab bench`. Then the
same command on any other checkpoints given (a classifier, a depth model: nothing here is task-specific).
Writes the `bench-variants` section of docs/benchmarks.md.

    python benchmarks/bench_camvid.py [--model CKPT] [--also CKPT ...] [key=value bench settings ...]

CamVid frames are 480x360; the model needs sides that are multiples of 32, so it is measured at 352x480
(what it was trained at; 360 is not a multiple of 32). Run it once, on a machine as idle as you can get:
the load average at start and end is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from doc_block import write_doc_block

REPO = Path(__file__).resolve().parents[1]
DOC_BLOCK = "bench-variants"
DEFAULT_MODEL = "/tmp/bench/runs/camvid/weights/best.safetensors"


def table(bench: dict[str, Any]) -> list[str]:
    key = bench["fitness_key"]
    lines = [f"| variant | {key} | Δ {key} | mean ms | p95 ms | p99 ms | images/s (batch {bench['batch']}) | "
             "size MB | peak RSS MB | speed-up | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bench["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['variant']} | | | | | | | | | | {r['status']}: {r.get('note', '')} |")
            continue
        lines.append(f"| {r['variant']} | {r['metric']:.4f} | {r.get('metric_diff', 0):+.4f} | {r['mean_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['throughput_ips']:.2f} | {r['size_mb']:.2f} | "
                     f"{r['peak_mem_mb']:.0f} | {r.get('speedup', 1):.2f}x | {r.get('note', '')} |")
    return lines


def command_of(run: Path) -> str:
    """The `visionlab bench` command that reproduces ``run`` (from its config.yaml)."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    opts = cfg["bench"]
    parts = [f"model={cfg['model']}", f"data={cfg['data']}", f"split={cfg['split']}",
             f"imgsz=[{cfg['imgsz'][0]},{cfg['imgsz'][1]}]", f"batch={cfg['batch']}", f"threads={cfg['threads']}",
             f"variants=[{','.join(opts['variants'])}]"]
    parts += [f"{k}={opts[k]}" for k in ("warmup", "iters", "repeats", "calib", "tolerance")]
    return "visionlab bench " + " ".join(parts)


def section(run: Path) -> list[str]:
    bench = json.loads((run / "bench.json").read_text())
    command = command_of(run)
    env = json.loads((run / "env.json").read_text())
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in env["cpu_flags"].items()
                      if k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile"))
    best = bench["best"]
    threads = env["torch_threads"]
    lines = [f"### {bench['task']}: {bench['model']} at {bench['imgsz'][0]}x{bench['imgsz'][1]}, "
             f"{bench['fitness_key']} on {bench['data']} split={bench['split']}, {threads} thread{'s' * (threads > 1)}", "",
             f"`{command}`", "",
             f"{env['cpu']}; CPU flags: {flags}. Load average (1/5/15 min) at start "
             f"{env['load_average_start']}, at end {env['load_average_end']}. {bench['params'] / 1e6:.2f}M params, "
             f"{bench['gflops']:.2f} GFLOP per image (FlopCounterMode). Run folder: `{run}`.", ""]
    lines += table(bench)
    if best:
        lines += ["", f"Best within {bench['tolerance']} {bench['fitness_key']} of eager fp32: **{best['variant']}**, "
                  f"{best['speedup']:.2f}x eager's batch-1 speed ({best['mean_ms']:.1f} vs "
                  f"{best['mean_ms'] * best['speedup']:.1f} ms), {bench['fitness_key']} {best['metric_diff']:+.4f}."]
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("VISIONLAB_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint of the CamVid recipe")
    ap.add_argument("--also", nargs="*", default=[], help="more checkpoints (any task) benchmarked the same way")
    ap.add_argument("--also-args", default="", help="key=value settings for the --also runs (e.g. 'max_images=1000')")
    ap.add_argument("--project", default=str(REPO / "runs" / "bench"))
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--from-runs", nargs="*", default=None, help="rewrite the doc section from existing bench runs")
    ap.add_argument("--no-single-thread", action="store_true",
                    help="skip the second CamVid run at threads=1 (eager, channels_last, compile_bf16, ort, ort_int8_static)")
    ap.add_argument("overrides", nargs="*", help="key=value bench settings (variants, iters, repeats, ...)")
    args = ap.parse_args()
    camvid = Path(args.shared) / "data" / "camvid"
    if args.from_runs is None and not (camvid / "val").is_dir():
        print(f"skip: CamVid not found at {camvid} (pass --shared or set VISIONLAB_SHARED)")
        return 0
    if args.from_runs is None and not Path(args.model).is_file():
        print(f"skip: no checkpoint at {args.model} (train benchmarks/camvid_recipe.yaml first, or pass --model)")
        return 0

    from visionlab.cfg import parse_overrides
    from visionlab.engine.bench import run_bench

    intro = ["## Inference variants (`visionlab bench`)", "",
             "Each variant of the same checkpoint is timed with one protocol (warm-up, then repeats x iters "
             "individually timed batch-1 calls; throughput at the eval batch size) and **re-evaluated on the whole "
             "evaluation split** with the task's metric; speed-ups are ratios to eager fp32 in the same run. "
             "ONNX variants use fixed-shape graphs (ONNX Runtime folds the shape arithmetic of TF 'same' padding); "
             "static INT8 is QDQ, per-channel int8 weights, calibrated on training images. CamVid frames are "
             "480x360; the model needs multiples of 32, so it runs at 352x480 (the size it was trained at).",
             "", "The machine is shared with other jobs, so absolute times are noisy; the load averages say how "
             "busy it was. When other jobs take a core, PyTorch's 2-thread eager run stalls at every OpenMP barrier "
             "(each of its many small ops waits for the descheduled thread), which inflates every speed-up over "
             "eager; the second CamVid run at threads=1 has no barriers and gives the contention-robust ratios.", ""]
    if args.from_runs is not None:
        runs = [Path(r) for r in args.from_runs]
    else:
        settings = ["split=val", "imgsz=[352,480]", "batch=8", "workers=1", *args.overrides]
        base = {"model": args.model, "data": f"camvid:{camvid}", "project": args.project, **parse_overrides(settings)}
        t0 = time.perf_counter()
        runs = [run_bench({**base, "name": "camvid"})]
        print(f"camvid bench: {time.perf_counter() - t0:.0f} s")
        if not args.no_single_thread:  # PyTorch's OpenMP barriers stall when other jobs share the cores
            runs.append(run_bench({**base, "name": "camvid_1thread", "threads": 1,
                                   "variants": ["channels_last", "compile_bf16", "ort", "ort_int8_static"]}))
        for ckpt in args.also:
            extra = args.also_args.split()
            runs.append(run_bench({"model": ckpt, "project": args.project, **parse_overrides(extra + args.overrides)}))
    body = intro + [line for run in runs for line in section(run)]
    write_doc_block(Path(args.doc), DOC_BLOCK, body)
    print(f"wrote the bench-variants section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
