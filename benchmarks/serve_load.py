"""Load test of `visionlab serve` on loopback: N concurrent clients for T seconds against a small model,
compared with the raw model throughput (``Task.infer`` in-process, same batch size as the server's mean)
measured in the same run, before and after the load (the CPU may be shared: the mean of both is used).

    python benchmarks/serve_load.py                     # 16 clients, 60 s, U-Net-mini at 128x128
    python benchmarks/serve_load.py --write-docs        # also update the serve-load block of docs/benchmarks.md

Only 127.0.0.1 is contacted; the request loop stops after --seconds or --max-requests, whichever first.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_model(folder: Path, imgsz: int) -> Path:
    """A U-Net-mini run folder with seeded random weights (speed does not depend on training)."""
    import torch

    import visionlab.tasks  # noqa: F401
    from visionlab.models.registry import create_model
    from visionlab.utils.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("unet_mini", num_classes=8)
    meta = {"task": "segment", "arch": "unet_mini", "arch_kwargs": {"num_classes": 8}, "imgsz": [imgsz, imgsz],
            "params": sum(p.numel() for p in model.parameters()), "config": {"imgsz": [imgsz, imgsz]}}
    save_checkpoint(folder / "weights" / "best.safetensors", model.state_dict(), meta)
    return folder


def test_images(n: int, size: int) -> list[bytes]:
    from PIL import Image

    from visionlab.data.synthetic import render_scene

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(render_scene(5_000_000 + i, size, size).image).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def raw_throughput(run: Path, images: list[bytes], batch: int, seconds: float) -> tuple[float, float]:
    """(images/s, CPU ms per image) of Task.infer alone on decoded images, ``batch`` at a time, in a worker
    thread like the server's (on the busy 2-core machine here, one measurement of the same loop in the main
    thread ran ~4x slower than in a worker thread: the like-for-like setup avoids that question)."""
    import threading

    out: list[tuple[float, float]] = []
    worker = threading.Thread(target=lambda: out.append(_raw(run, images, batch, seconds)))
    worker.start()
    worker.join()
    return out[0]


def _raw(run: Path, images: list[bytes], batch: int, seconds: float) -> tuple[float, float]:
    from visionlab.serve.imaging import decode_upload
    from visionlab.serve.models import load_served_model

    served = load_served_model("raw", str(run))
    arrays = [decode_upload(b) for b in images]
    batches = [[arrays[(i + j) % len(arrays)] for j in range(batch)] for i in range(len(arrays))]
    served.infer(batches[0])  # warm-up
    done, t0, cpu0, k = 0, time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - t0 < seconds:
        served.infer(batches[k % len(batches)])
        done, k = done + batch, k + 1
    return done / (time.perf_counter() - t0), (time.process_time() - cpu0) * 1000 / done


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, images: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    sent = 0

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        k = i
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(url, files={"file": ("scene.png", images[k % len(images)], "image/png")})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            k += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"ok": len(latencies), "errors": errors, "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "p99": float(np.percentile(ms, 99))}


def batch_stat(metrics_text: str, key: str) -> float:
    """``sum`` or ``count`` of the server's batch-size histogram (images per model call)."""
    found = re.search(rf'visionlab_batch_size_{key}\{{model="bench"\}} ([0-9.e+]+)', metrics_text)
    return float(found.group(1)) if found else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--raw-seconds", type=float, default=15, help="raw measurement before and after the load")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    run = make_model(work / "bench", args.imgsz)
    images = test_images(16, args.imgsz)
    port = free_port()
    log = (work / "api.log").open("w")
    api = subprocess.Popen([sys.executable, "-m", "visionlab", "serve", f"model={run}", f"port={port}",
                            f"max_batch={args.max_batch}", f"max_pending={4 * args.clients}", "log_level=warning"],
                           stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VISIONLAB_PROGRESS": "0"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/ready", timeout=2)
                break
            except OSError:
                if api.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"API did not start: {(work / 'api.log').read_text()[-2000:]}")
                time.sleep(0.5)
        asyncio.run(load(f"{base}/predict/bench", images, 2, 3, 50))  # warm-up, not counted
        before_metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        raw_before, raw_cpu_before = raw_throughput(run, images, args.max_batch, args.raw_seconds)
        cpu0 = process_cpu_s(api.pid)
        result = asyncio.run(load(f"{base}/predict/bench", images, args.clients, args.seconds, args.max_requests))
        api_cpu_ms = (process_cpu_s(api.pid) - cpu0) * 1000 / max(result["ok"], 1)
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
    finally:
        api.terminate()
        api.wait(30)
        log.close()
    # the server's mean batch over the measured load only (the warm-up's small batches subtracted)
    calls = batch_stat(metrics, "count") - batch_stat(before_metrics, "count")
    batch = (batch_stat(metrics, "sum") - batch_stat(before_metrics, "sum")) / max(calls, 1)
    same_batch = max(1, round(batch))
    raw_after, raw_cpu_after = raw_throughput(run, images, same_batch, args.raw_seconds)
    raw = (raw_before + raw_after) / 2 if same_batch == args.max_batch else raw_after
    raw_cpu = (raw_cpu_before + raw_cpu_after) / 2 if same_batch == args.max_batch else raw_cpu_after
    ratio = result["rps"] / raw
    load_avg = os.getloadavg()
    lines = [
        f"clients {args.clients}, {result['seconds']:.0f} s, U-Net-mini {args.imgsz}x{args.imgsz} PNG in, PNG mask out, "
        f"max_batch {args.max_batch}, {os.cpu_count()} CPU cores (load average {load_avg[0]:.1f} at the end)",
        f"API:  {result['rps']:.2f} requests/s, latency p50 {result['p50']:.0f} ms, p95 {result['p95']:.0f} ms, "
        f"p99 {result['p99']:.0f} ms, {result['ok']} ok, errors {result['errors'] or 0}, mean batch {batch:.2f}",
        f"raw:  {raw:.2f} images/s (Task.infer in-process, batch {same_batch}; before {raw_before:.2f}, "
        f"after {raw_after:.2f})",
        f"API / raw = {ratio:.0%} (target >= 80%)",
        f"CPU per image: API process {api_cpu_ms:.0f} ms (HTTP, decode, infer, encode), raw infer {raw_cpu:.0f} ms "
        f"-> raw / API = {raw_cpu / api_cpu_ms:.0%}",
    ]
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)
    if args.write_docs:
        block = ("<!-- serve-load:begin -->\n### API under load (`visionlab serve`)\n\n"
                 "`python benchmarks/serve_load.py --write-docs` (16 concurrent clients for 60 s on 127.0.0.1):\n\n"
                 "```\n" + "\n".join(lines) + "\n```\n\n"
                 "The machine's 2 cores were shared with other jobs (load average above). Under that load the raw "
                 "loop's speed varied about 2x between its before and after windows, and so did its CPU per image "
                 "(probably OpenMP threads spinning while a descheduled sibling holds them up): read the ratios as 'the API "
                 "is not the bottleneck', not as a precise overhead. A same-process, interleaved check of "
                 "Task.infer called directly and through the micro-batcher measured the same CPU per image "
                 "(20-28 ms) for both.\n<!-- serve-load:end -->")
        docs = REPO / "docs" / "benchmarks.md"
        text = docs.read_text()
        pattern = re.compile(r"<!-- serve-load:begin -->.*?<!-- serve-load:end -->", re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
        docs.write_text(text)
        print(f"updated {docs}")


if __name__ == "__main__":
    main()
