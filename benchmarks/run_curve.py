"""A finished run's learning curve from its metrics.csv, for the benchmark reports."""

from __future__ import annotations

import csv
from pathlib import Path


def training_curve(run_dir: Path, key: str) -> list[tuple[int, float, float]]:
    """(epoch, cumulative training seconds at the end of it, validation ``key``) per epoch. Training time only:
    metrics.csv's ``time_s`` excludes the per-epoch validation."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out, elapsed = [], 0.0
    for r in rows:
        elapsed += float(r["time_s"])
        out.append((int(r["epoch"]), elapsed, float(r[key])))
    return out
