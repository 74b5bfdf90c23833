"""How ``visionlab bench`` measures (timed calls, latency statistics, FLOPs, peak memory) and what it writes:
results.csv / results.md, latency.png, pareto.png, and the choice of the best variant (fastest one that
keeps the task's metric within a tolerance of the fp32 baseline)."""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionlab.utils.files import atomic_write_text

# ----------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_calls(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device, warmup: int, iters: int,
               repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats * iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn(x)
    _sync(device)
    times = []
    for _ in range(repeats):
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000)
    return times


def latency_stats(times: list[float]) -> dict[str, float]:
    """mean, std, p50/p95/p99 (linear interpolation between order statistics, numpy's default)."""
    a = np.asarray(times, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))}


def count_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward pass (PyTorch's FlopCounterMode: 2 per multiply-add of convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; max RSS so far elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on GPU; on CPU the process RSS sampled every
    5 ms (the kernel's max RSS only ever grows, so it cannot tell variants apart)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb, self._stop = device, 0.0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_mb = rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, rss_mb())


# ----------------------------------------------------------------------------- report


COLUMNS = ["variant", "status", "metric", "metric_diff", "mean_ms", "std_ms", "p50_ms", "p95_ms", "p99_ms",
           "throughput_ips", "speedup", "throughput_speedup", "size_mb", "peak_mem_mb", "params", "gflops",
           "gflops_per_s", "note"]


def _ok(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and isinstance(row.get("metric"), (int, float)) and row["metric"] == row["metric"]


def pareto_front(rows: list[dict[str, Any]], mode: str) -> list[int]:
    """Indices of the measured rows no other row beats on both latency (``mean_ms``, lower) and ``metric``
    (higher if ``mode`` is "max", lower if "min"), sorted by latency."""
    sign = 1.0 if mode == "max" else -1.0
    points = [(i, r["mean_ms"], sign * r["metric"]) for i, r in enumerate(rows) if _ok(r)]
    front = [i for i, ms, m in points
             if not any((ms2 <= ms and m2 >= m) and (ms2 < ms or m2 > m) for _, ms2, m2 in points)]
    return sorted(front, key=lambda i: rows[i]["mean_ms"])


def best_variant(rows: list[dict[str, Any]], mode: str, tolerance: float, baseline: str = "eager") -> dict[str, Any] | None:
    """The fastest measured row whose metric is at most ``tolerance`` worse than ``baseline``'s (absolute,
    in the task's fitness direction); None without a measured baseline."""
    base = next((r for r in rows if r["variant"] == baseline and _ok(r)), None)
    if base is None:
        return None
    worst = base["metric"] - tolerance if mode == "max" else base["metric"] + tolerance
    keep = [r for r in rows if _ok(r) and (r["metric"] >= worst if mode == "max" else r["metric"] <= worst)]
    return min(keep, key=lambda r: r["mean_ms"])


def write_tables(rows: list[dict[str, Any]], save_dir: Path, metric_name: str) -> tuple[Path, Path]:
    """results.csv (every column, full precision) and results.md (the columns people read)."""
    extra = sorted({k for r in rows for k in r if k not in COLUMNS})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS + extra, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(save_dir / "results.csv", buf.getvalue())
    shown = [("variant", "variant", "{}"), ("metric", metric_name, "{:.4f}"), ("mean_ms", "mean ms", "{:.2f}"),
             ("p95_ms", "p95 ms", "{:.2f}"), ("throughput_ips", "images/s", "{:.1f}"), ("size_mb", "size MB", "{:.2f}"),
             ("speedup", "speed-up", "{:.2f}x"), ("status", "status", "{}")]
    md = ["| " + " | ".join(t for _, t, _ in shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "" for k, _, fmt in shown]
        if r.get("status") != "ok":  # failed / skipped rows say why in the status column
            cells[-1] = f"{r.get('status')}: {r.get('note', '')}".replace("|", "/")
        md.append("| " + " | ".join(cells) + " |")
    md_path = atomic_write_text(save_dir / "results.md", "\n".join(md) + "\n")
    return csv_path, md_path


def plot_latency(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars: mean batch-1 latency (p95 as the error bar's end) of every measured variant."""
    from visionlab.plots import plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get("mean_ms") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(ok), 2) + 1.2))
    names = [r["variant"] for r in ok]
    means = [r["mean_ms"] for r in ok]
    spread = [max(0.0, r["p95_ms"] - r["mean_ms"]) for r in ok]
    ax.barh(names, means, xerr=[[0] * len(ok), spread], color="#4c78a8", capsize=3)
    for y, r in enumerate(ok):  # the label starts after the whisker
        ax.text(max(r["mean_ms"], r["p95_ms"]), y, f"  {r['mean_ms']:.1f} ms ({r.get('speedup', 1.0):.2f}x)",
                va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("batch-1 latency, ms (bar: mean, whisker: p95)")
    ax.set_xlim(0, max([r["p95_ms"] for r in ok] + means + [1.0]) * 1.4)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pareto(rows: list[dict[str, Any]], path: Path, metric_name: str, mode: str, title: str) -> Path:
    """Metric vs batch-1 latency, the Pareto front joined (better = left and up for "max", down for "min")."""
    from visionlab.plots import plt

    ok = [r for r in rows if _ok(r)]
    front = [rows[i] for i in pareto_front(rows, mode)]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter([r["mean_ms"] for r in ok], [r["metric"] for r in ok], color="#4c78a8", zorder=3)
    for r in ok:
        ax.annotate(r["variant"], (r["mean_ms"], r["metric"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    if front:
        ax.step([r["mean_ms"] for r in front], [r["metric"] for r in front], where="post", color="#e45756",
                lw=1.5, zorder=2)
        ax.scatter([r["mean_ms"] for r in front], [r["metric"] for r in front], s=140, facecolors="none",
                   edgecolors="#e45756", lw=1.5, label="Pareto front", zorder=4)
        ax.legend(fontsize=8)
    ax.set_xlabel("batch-1 latency, ms (mean)")
    ax.set_ylabel(f"{metric_name} ({'higher' if mode == 'max' else 'lower'} is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
