"""1 process vs 2 gloo processes (torchrun) on this CPU: the same synthetic training job both ways.
Prints a markdown table (used in docs/scaling.md). Each configuration uses all cores: 1 process x N
threads vs N processes x 1 thread.

    python benchmarks/ddp_cpu.py [--nproc 2] [key=value overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = ["segment", "train", "data=synthetic", "imgsz=128", "synthetic_train=192", "synthetic_val=48", "epochs=3",
       "batch=8", "workers=0", "mlflow=false", "plots=false"]


def run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    env = {**os.environ, "VISIONLAB_PROGRESS": "0"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [
            ("1 process", 1, [sys.executable, "-m", "visionlab.cli"], cores),
            (f"{args.nproc} processes (torchrun, gloo)", args.nproc,
             [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
              "-m", "visionlab.cli"], max(1, cores // args.nproc)),
        ]
        for label, nproc, prefix, threads in configs:
            name = f"p{nproc}"
            wall = run([*prefix, *JOB, *args.overrides, f"threads={threads}", f"project={tmp}", f"name={name}"],
                       {**env, "OMP_NUM_THREADS": str(threads)})
            res = json.loads((Path(tmp) / name / "results.json").read_text())
            n_images = 192 * res["epochs"]
            rows.append((label, threads, wall, res["train_time_s"], n_images / res["train_time_s"], res["val"]["miou"]))
    print("| setup | threads/process | wall (s) | training (s) | train images/s | val mIoU |")
    print("|---|---|---|---|---|---|")
    for label, threads, wall, train_s, rate, miou in rows:
        print(f"| {label} | {threads} | {wall:.1f} | {train_s:.1f} | {rate:.1f} | {miou:.4f} |")
    print(f"\nspeed-up of training, {rows[1][0]} vs 1 process: {rows[0][3] / rows[1][3]:.2f}x")
    print(f"job: visionlab {' '.join(JOB + args.overrides)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
