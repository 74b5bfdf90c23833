"""Where an ONNX model's batch-1 time goes in ONNX Runtime: share of kernel time per operator type, from
ORT's own profiler (the graph as ORT runs it, after its fusions). Use it on the files `visionlab bench`
leaves in its run folder (artefacts/fp32_b1.onnx, artefacts/int8_static_b1.onnx) to see why a variant is
not faster, e.g. which ops an INT8 graph still runs in float between Dequantize/Quantize pairs.

    python benchmarks/ort_profile.py RUN/artefacts/int8_static_b1.onnx [--threads 2] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = (np.random.default_rng(0).random(shape, dtype=np.float32) * 255).astype(np.float32)
        for _ in range(5):
            session.run(None, {inp.name: x})
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            session.run(None, {inp.name: x})
            times.append((time.perf_counter() - t0) * 1000)
        events = json.loads(Path(session.end_profiling()).read_text())
    total: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            calls[e["args"]["op_name"]] += 1
    runs = 5 + args.runs
    print(f"{args.model.name}: input {shape}, {args.threads} threads, median {statistics.median(times):.1f} ms "
          f"over {args.runs} runs (profiling on)")
    print("| op | share of kernel time | calls per run |\n|---|---|---|")
    whole = sum(total.values()) or 1
    for op, dur in total.most_common(args.top):
        print(f"| {op} | {100 * dur / whole:.1f}% | {calls[op] // runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
