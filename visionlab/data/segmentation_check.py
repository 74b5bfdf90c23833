"""``visionlab data check PATH``: read every file of a dataset once and report every problem.

Each image and label is hashed and fully decoded (from the same bytes); nothing is skipped
silently: every unreadable, unpaired or inconsistent file becomes a :class:`Problem`, and a JSON
manifest (sizes, category frequencies, sha256 of every file) is written for reproducibility.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table

from visionlab.utils.files import atomic_write_json
from visionlab.data.categories import CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES
from visionlab.data.io import DataError, read_bytes, read_image_bytes, read_label_bytes
from visionlab.data.segmentation_layouts import DataSpec, describe_ids, parse_data_spec, scan_split, valid_id_mask

PROBLEM_KINDS = (
    "corrupt", "truncated", "too_large", "unpaired_image", "unpaired_label", "size_mismatch",
    "unknown_label_ids", "too_small", "unreadable",
    "bad_label",    # readable but not a label-id map (colour RGB mask, ids > 255)
    "empty_split",  # a split directory without any image
    "missing_dir",  # a split's image directory does not exist
)
FREQ_NAMES = (*CATEGORY_NAMES, "ignore")  # 8 categories + ignore: what the frequencies are over
_IO_KINDS = {"corrupt", "truncated", "too_large", "bad_label", "unreadable"}


@dataclass
class Problem:
    path: str
    kind: str
    detail: str


@dataclass
class _FileResult:
    problems: list[Problem] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] | None = None       # image (height, width) if decodable
    raw_counts: np.ndarray | None = None      # label: pixels per raw id, if the pair is clean


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _problem(path: Path, err: DataError) -> Problem:
    msg = str(err)
    prefix = f"{path}: "
    detail = msg[len(prefix):] if msg.startswith(prefix) else msg  # the table has a file column
    return Problem(str(path), err.kind if err.kind in _IO_KINDS else "unreadable", detail)


def _load(path: Path, root: Path, is_label: bool, res: _FileResult) -> np.ndarray | None:
    """Hash + decode one file from a single read; record a Problem instead of raising."""
    try:
        data = read_bytes(path)
        res.hashes[_rel(path, root)] = hashlib.sha256(data).hexdigest()  # releases the GIL
        return read_label_bytes(path, data) if is_label else read_image_bytes(path, data)
    except DataError as e:
        res.problems.append(_problem(path, e))
        return None


def _check_pair(
    image: Path | None, label: Path | None, spec: DataSpec, valid: np.ndarray, min_size: int, no_label: str | None
) -> _FileResult:
    """Check one pair (or one unpaired file): decode, sizes, label ids. Runs in a worker thread."""
    assert spec.root is not None
    res = _FileResult()
    add = res.problems.append
    img = _load(image, spec.root, False, res) if image is not None else None
    lbl = _load(label, spec.root, True, res) if label is not None else None
    if image is not None and label is None:
        add(Problem(str(image), "unpaired_image", no_label or "no label file for this image"))
    if label is not None and image is None:
        add(Problem(str(label), "unpaired_label", "no image for this label file"))
    if img is not None:
        res.size = img.shape[:2]
        if min(res.size) < min_size:
            h, w = res.size
            add(Problem(str(image), "too_small", f"image is {w}x{h}, smaller than min_size={min_size} px"))
    if lbl is not None:
        counts = np.bincount(lbl.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & ~valid)
        if bad.size:
            ids = ", ".join(f"{i} ({counts[i]} px)" for i in bad[:20])
            detail = f"unknown label ids {ids}; {spec.name} defines {describe_ids(spec)}"
            add(Problem(str(label), "unknown_label_ids", detail))
        if img is not None and img.shape[:2] != lbl.shape:
            sizes = f"label is {lbl.shape[1]}x{lbl.shape[0]} but image {image} is {img.shape[1]}x{img.shape[0]}"
            add(Problem(str(label), "size_mismatch", sizes))
        if not res.problems:
            res.raw_counts = counts
    return res


def _frequencies(raw_counts: np.ndarray, lut: np.ndarray) -> tuple[dict[str, int], dict[str, float]]:
    """Raw-id pixel counts -> pixels and fractions per category + ignore (vectorised via bincount)."""
    # Sum raw-id counts into the category each id maps to: index = category id or 255 (ignore).
    per_value = np.bincount(lut, weights=raw_counts.astype(np.float64), minlength=256)
    pixels = np.append(per_value[:NUM_CATEGORIES], per_value[IGNORE_INDEX]).astype(np.int64)
    total = int(pixels.sum())
    fracs = pixels / total if total else np.zeros(len(pixels))
    return dict(zip(FREQ_NAMES, map(int, pixels))), dict(zip(FREQ_NAMES, (round(float(f), 8) for f in fracs)))


def _summary(
    problems: list[Problem], n_pairs: int, ok_pairs: int, sizes: Counter, raw_counts: np.ndarray, lut: np.ndarray
) -> dict:
    pixels, fracs = _frequencies(raw_counts, lut)
    return {
        "pairs": n_pairs,
        "ok_pairs": ok_pairs,
        "problems": len(problems),
        "problems_by_kind": dict(sorted(Counter(p.kind for p in problems).items())),
        "image_sizes": {f"{w}x{h}": n for (h, w), n in sorted(sizes.items())},  # WxH -> count
        "label_id_pixels": {str(i): int(raw_counts[i]) for i in np.flatnonzero(raw_counts)},
        "category_pixels": pixels,
        "category_frequencies": fracs,  # over pixels of clean pairs only
    }


def check_dataset(
    spec: str,
    min_size: int = 32,
    splits: list[str] | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> tuple[list[Problem], dict]:
    """Scan every split (or ``splits``) of a dataset; return (problems, manifest dict).

    Raises DataError only if the spec itself is unusable (missing dir, unknown layout, unknown split).
    """
    ds = parse_data_spec(spec)
    if ds.kind == "synthetic" or ds.root is None:
        raise DataError("data=synthetic: generated on the fly, there are no files to check")
    wanted = list(ds.splits) if splits is None else list(splits)
    missing = [s for s in wanted if s not in ds.splits]
    if missing:
        existing = ", ".join(ds.splits) or "none"
        raise DataError(f"data={spec}: split(s) {missing} not found in {ds.root} (existing splits: {existing})")
    valid = valid_id_mask(ds)

    # Listing is cheap; do it for every split first so the progress bar knows the total.
    jobs: dict[str, list[tuple[Path | None, Path | None, str | None]]] = {}
    split_problems: dict[str, list[Problem]] = {s: [] for s in wanted}
    other_files: dict[str, list[str]] = {}
    n_pairs: dict[str, int] = {}
    for s in wanted:
        try:
            scan = scan_split(ds, s)
        except DataError as e:
            image_dir = ds.root / ds.splits[s][0]
            split_problems[s].append(Problem(str(image_dir), "missing_dir", str(e)))
            jobs[s], other_files[s], n_pairs[s] = [], [], 0
            continue
        no_label = None if scan.label_dir.is_dir() else f"no label: directory {scan.label_dir} does not exist"
        jobs[s] = [(i, l, None) for i, l in scan.pairs]
        jobs[s] += [(i, None, no_label) for i in scan.unpaired_images]
        jobs[s] += [(None, l, None) for l in scan.unpaired_labels]
        other_files[s] = [_rel(p, ds.root) for p in scan.other_files]
        n_pairs[s] = len(scan.pairs)
        if not scan.pairs and not scan.unpaired_images:
            split_problems[s].append(Problem(str(scan.image_dir), "empty_split", f"no images in split '{s}'"))

    hashes: dict[str, str] = {}
    sizes = {s: Counter() for s in wanted}
    counts = {s: np.zeros(256, dtype=np.int64) for s in wanted}
    ok = {s: 0 for s in wanted}
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    # Threads: PIL decoding and hashlib release the GIL; 2-4 workers keep small machines usable.
    workers = min(4, max(2, os.cpu_count() or 2))
    bar = Progress(*columns, console=console, disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        for s in wanted:
            task = bar.add_task(f"check {ds.name}/{s}", total=len(jobs[s]))
            futures = [pool.submit(_check_pair, i, l, ds, valid, min_size, why) for i, l, why in jobs[s]]
            for fut in as_completed(futures):
                res = fut.result()
                split_problems[s].extend(res.problems)
                hashes.update(res.hashes)
                if res.size is not None:
                    sizes[s][res.size] += 1
                if res.raw_counts is not None:
                    counts[s] += res.raw_counts
                    ok[s] += 1
                bar.advance(task)

    problems: list[Problem] = []
    split_info: dict[str, dict] = {}
    for s in wanted:
        split_problems[s].sort(key=lambda p: (p.path, p.kind))  # threads finish in any order
        problems.extend(split_problems[s])
        split_info[s] = _summary(split_problems[s], n_pairs[s], ok[s], sizes[s], counts[s], ds.lut)
        split_info[s]["other_files"] = other_files[s]  # listed, not read (README.txt, ...)
    manifest = {
        "format": "visionlab-data-manifest/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": ds.name, "kind": ds.kind, "root": str(ds.root.resolve()), "spec": spec},
        "min_size": min_size,
        "categories": list(FREQ_NAMES),
        "splits": split_info,
        "total": _summary(
            problems, sum(n_pairs.values()), sum(ok.values()), sum(sizes.values(), Counter()),
            sum(counts.values(), np.zeros(256, dtype=np.int64)), ds.lut,
        ),
        "problems": [asdict(p) for p in problems],
        "files": dict(sorted(hashes.items())),  # path relative to root -> sha256
    }
    return problems, manifest


def default_manifest_path(name: str) -> Path:
    # Relative to the cwd, never inside the dataset (it may be read-only or shared).
    return Path("runs") / "data" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name) or 'dataset'}_manifest.json"


def run_check(spec: str, out: Path | None, console: Console) -> int:
    """Check a dataset, print every problem and a summary, write the manifest. 0 = clean, 1 = problems.

    An unusable spec (missing directory, unknown layout) raises DataError for the CLI to print.
    """
    problems, manifest = check_dataset(spec, console=console)
    root = Path(manifest["dataset"]["root"])
    if problems:
        table = Table(title=f"{len(problems)} problem(s) in {manifest['dataset']['name']}", show_lines=False)
        table.add_column("file", overflow="fold")
        table.add_column("kind", style="bold red", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for p in problems:
            table.add_row(_rel(Path(p.path).resolve(), root), p.kind, p.detail)
        console.print(table)

    summary = Table(title=f"{manifest['dataset']['name']} ({manifest['dataset']['kind']}) at {root}")
    summary.add_column("split")
    summary.add_column("pairs ok", justify="right")
    summary.add_column("problems", justify="right")
    summary.add_column("sizes (WxH: n)")
    for s, info in [*manifest["splits"].items(), ("total", manifest["total"])]:
        kinds = ", ".join(f"{k}: {n}" for k, n in info["problems_by_kind"].items()) or "0"
        sizes = ", ".join(f"{k}: {n}" for k, n in list(info["image_sizes"].items())[:4])
        sizes += " ..." if len(info["image_sizes"]) > 4 else ""
        summary.add_row(s, f"{info['ok_pairs']}/{info['pairs']}", kinds, sizes)
    console.print(summary)

    freq = Table(title="category pixel frequencies (clean pairs)")
    for s in ("split", *FREQ_NAMES):
        freq.add_column(s, justify="right")
    for s, info in [*manifest["splits"].items(), ("total", manifest["total"])]:
        freq.add_row(s, *(f"{100 * info['category_frequencies'][c]:.1f}%" for c in FREQ_NAMES))
    console.print(freq)

    dest = Path(out) if out is not None else default_manifest_path(manifest["dataset"]["name"])
    atomic_write_json(dest, manifest)
    verdict = "[green]no problems[/green]" if not problems else f"[red]{len(problems)} problem(s)[/red]"
    console.print(f"{verdict}; manifest ({len(manifest['files'])} file hashes) written to {dest}")
    return 0 if not problems else 1
