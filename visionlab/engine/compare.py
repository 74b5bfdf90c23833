"""``visionlab compare`` and ``visionlab runs``: one table over run folders, from their records
(results.json written at the end of training, else the last row of metrics.csv)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from visionlab.utils.files import atomic_write_text

BASE_COLUMNS = ["run", "task", "model", "data", "split", "epochs", "fitness", "rank", "params_M", "train_min",
                "peak_mem_mb", "infer_ms"]


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders among ``paths`` (a run folder, or a folder of run folders such as runs/segment)."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.add(p)
        elif p.is_dir():
            # a run has weights/last; MLflow's artifact copies (runs/mlartifacts/...) have no last
            # a bench run (visionlab bench) has bench.json instead
            found.update(c.parent for c in p.rglob("config.yaml")
                         if ((c.parent / "weights" / "last.safetensors").is_file() or (c.parent / "bench.json").is_file())
                         and "mlartifacts" not in c.parts)
    return sorted(found)


def read_bench_record(run: Path) -> dict[str, Any]:
    """A ``visionlab bench`` run as one row: its best variant (the fastest within the run's tolerance of the
    eager fp32 metric), that variant's metric as fitness, batch-1 latency and speed-up over eager."""
    res = json.loads((run / "bench.json").read_text())
    best = res.get("best") or {}
    measured = [r for r in res.get("rows", []) if r.get("status") == "ok"]
    return {"run": str(run), "task": res.get("task"), "model": res.get("model"), "data": res.get("data"),
            "split": res.get("split"), "fitness_key": res.get("fitness_key"), "fitness_mode": res.get("fitness_mode"),
            "fitness": best.get("metric"), "params_M": round(res["params"] / 1e6, 3) if res.get("params") else None,
            "peak_mem_mb": best.get("peak_mem_mb"), "infer_ms": round(best["mean_ms"], 2) if best else None,
            "best_variant": best.get("variant"), "speedup": round(best["speedup"], 2) if best.get("speedup") else None,
            "status": f"bench ({len(measured)}/{len(res.get('rows', []))} variants)"}


def read_record(run: Path) -> dict[str, Any]:
    import yaml

    if (run / "bench.json").is_file():
        return read_bench_record(run)

    cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    rec: dict[str, Any] = {"run": str(run), "task": cfg.get("task"), "model": cfg.get("model"),
                           "data": cfg.get("data"), "split": cfg.get("split"), "epochs": cfg.get("epochs")}
    results_file = run / "results.json"
    if results_file.is_file():
        res = json.loads(results_file.read_text())
        metrics = res.get("val", {})
        rec.update({"model": res.get("model", rec["model"]), "params_M": round(res["params"] / 1e6, 3),
                    "train_min": round(res["train_time_s"] / 60, 2), "peak_mem_mb": res.get("peak_mem_mb"),
                    "infer_ms": round(res["inference_ms"]["p50"], 2), "status": "done"})
    else:  # unfinished run: last epoch's numbers
        rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
        metrics = {k: float(v) for k, v in (rows[-1] if rows else {}).items() if v not in ("", None)}
        rec.update({"train_min": round(sum(float(r["time_s"]) for r in rows) / 60, 2) if rows else None,
                    "peak_mem_mb": metrics.get("peak_mem_mb"), "status": f"epoch {len(rows)}"})
    from visionlab.tasks.base import get_task

    try:
        task = get_task(rec["task"])
    except ValueError:
        task = None
    rec["fitness_key"] = task.fitness_key if task else None
    rec["fitness_mode"] = task.fitness_mode if task else None
    rec["fitness"] = metrics.get(task.fitness_key) if task else None
    rec.update({k: v for k, v in metrics.items() if task is not None and task.compare_shows(k)})
    return rec


def rank_like_with_like(records: list[dict[str, Any]]) -> None:
    """``rank`` 1, 2 ... within runs of the same task evaluated on the same data and split (the task's
    fitness direction decides); runs without a comparable number get no rank."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if isinstance(r.get("fitness"), (int, float)) and r["fitness"] == r["fitness"]:
            groups.setdefault((r["task"], r["data"], r["split"], r["fitness_key"]), []).append(r)
    for group in groups.values():
        group.sort(key=lambda r: r["fitness"], reverse=group[0]["fitness_mode"] == "max")
        for i, r in enumerate(group, 1):
            r["rank"] = f"{i}/{len(group)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return "" if v is None else str(v)


def compare(paths: list[str], out: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no run folders (with config.yaml) under: {' '.join(paths)}")
    records = [read_record(r) for r in runs]
    rank_like_with_like(records)
    extra = sorted({k for r in records for k in r
                    if k not in BASE_COLUMNS and k not in ("status", "fitness_key", "fitness_mode")})
    columns = BASE_COLUMNS + extra + ["status"]
    if out is not None:
        md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        md += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in records]
        atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
        lines = [",".join(columns)] + [",".join(_fmt(r.get(c)) for c in columns) for r in records]
        atomic_write_text(out.with_suffix(".csv"), "\n".join(lines) + "\n")
    return columns, records


def print_table(columns: list[str], records: list[dict[str, Any]], console: Any, title: str) -> None:
    """One row per run; when that is wider than the terminal, one column per run instead (one row per field),
    so names and numbers stay whole. The .md / .csv files always keep one row per run."""
    from rich.table import Table

    names = [c.replace("iou/", "") for c in columns]
    cells = [[_fmt(r.get(c)) for c in columns] for r in records]
    needed = 1 + sum(3 + max([len(n)] + [len(row[i]) for row in cells]) for i, n in enumerate(names))
    if needed <= console.width or len(columns) < 2:
        table = Table(title=title)
        for n in names:
            table.add_column(n, overflow="fold")
        for row in cells:
            table.add_row(*row)
    else:  # runs named relative to the folder they share, so the headers stay short
        runs = [row[0] for row in cells]
        try:
            common = os.path.commonpath(runs) if len(runs) > 1 else os.path.dirname(runs[0])
        except ValueError:  # absolute and relative paths mixed
            common = ""
        where = f" in {common}" if common else ""
        table = Table(title=f"{title}{where} (one column per run: too wide for {console.width} columns)")
        table.add_column(names[0])  # the header row names the runs
        for run in runs:
            table.add_column(os.path.relpath(run, common) if common else run, overflow="fold")
        for i in range(1, len(names)):
            table.add_row(names[i], *(row[i] for row in cells))
    console.print(table)
