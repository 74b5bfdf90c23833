"""The classify task's extra modes and helpers: ``compare-optimizers`` (a small grid of ordinary runs + one
compare table + one figure), ``visionlab data check --task classify``, the prediction grid figure,
predictions.csv, and ``pretrained=`` loading of matching weights."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionlab.utils.checkpoint import CheckpointError
from visionlab.utils.files import atomic_write_json, atomic_write_text
from visionlab.utils.progress import console

# ----------------------------------------------------------------------------- compare-optimizers

# per-optimizer peak lr for the small_cnn grid (SGD needs ~30x Adam's); `lr=` on the command line overrides all
GRID_LR = {"sgd": 0.05, "adam": 0.001, "rmsprop": 0.001}
# regulariser switches: each variant turns one on (preset=small) or every combination (preset=full)
REGULARISERS = {"dropout": {"dropout": 0.3}, "wd": {"weight_decay": 5e-4}, "bn": {"batchnorm": True}}
PLAIN = {"dropout": 0.0, "weight_decay": 0.0, "batchnorm": False}
PRESETS = ("small", "full")


def grid(preset: str = "small", optimizers: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(run name, settings) per run: every optimizer x {plain, +dropout, +wd, +bn} (small) or x every
    subset of the three regularisers (full)."""
    from visionlab.cfg import ConfigError

    if preset not in PRESETS:
        raise ConfigError(f"preset={preset}: expected one of {', '.join(PRESETS)}")
    optimizers = optimizers or list(GRID_LR)
    unknown = [o for o in optimizers if o not in GRID_LR]
    if unknown:
        raise ConfigError(f"optimizers={optimizers}: {', '.join(unknown)} not in {', '.join(GRID_LR)}")
    names = list(REGULARISERS)
    combos = [()] + ([(n,) for n in names] if preset == "small" else
                     [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)])
    runs = []
    for opt in optimizers:
        for combo in combos:
            settings = {"optimizer": opt, "lr": GRID_LR[opt], **PLAIN}
            for n in combo:
                settings.update(REGULARISERS[n])
            runs.append((f"{opt}-{'+'.join(combo) or 'plain'}", settings))
    return runs


def compare_optimizers(task: Any, overrides: dict[str, Any]) -> Path:
    """``visionlab classify compare-optimizers data=... [preset=small|full] [optimizers=[sgd,adam]]
    [epochs=...] project=DIR name=NAME``: the grid as ordinary runs under project/name/ (model small_cnn
    unless model= is given), then compare.md/.csv and val_accuracy.png (overlaid val-accuracy curves)."""
    from visionlab.engine.compare import compare
    from visionlab.engine.trainer import train, train_config

    overrides = dict(overrides)
    preset = str(overrides.pop("preset", "small"))
    optimizers = overrides.pop("optimizers", None)
    optimizers = [optimizers] if isinstance(optimizers, str) else optimizers
    root = Path(overrides.pop("project", "runs/classify")) / str(overrides.pop("name", "optimizers"))
    overrides.setdefault("model", "small_cnn")
    runs = grid(preset, optimizers)
    for run_name, settings in runs:
        console.print(f"[bold]compare-optimizers[/] {run_name} ({len(runs)} runs in {root})")
        merged = {**settings, **overrides, "project": str(root), "name": run_name, "exist_ok": True}
        train(task, train_config(task, merged))
    columns, records = compare([str(root)], root / "compare")
    plot_val_curves([root / name for name, _ in runs], task.fitness_key, root / "val_accuracy.png")
    from visionlab.engine.compare import print_table

    print_table(columns, records, console, f"{len(records)} runs")
    console.print(f"table {root / 'compare.md'}, curves {root / 'val_accuracy.png'}")
    return root


def plot_val_curves(run_dirs: list[Path], key: str, save_path: Path) -> Path:
    """One line per run: ``key`` (val accuracy) per epoch from its metrics.csv; line style by optimizer."""
    from visionlab.plots import plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {}
    for run in run_dirs:
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        opt = run.name.split("-")[0]
        style = styles.setdefault(opt, ["-", "--", ":", "-."][len(styles) % 4])
        ax.plot([int(r["epoch"]) for r in rows], [float(r[key]) for r in rows], style, marker="o", ms=3,
                label=run.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(save_path, dpi=110)
    plt.close(fig)
    return save_path


# ----------------------------------------------------------------------------- data check


def check_classify_data(spec: str, out: Path | None, console_: Any) -> int:
    """Load every split: name each corrupt image (left out) and any class folder outside the training
    classes; write a manifest (class counts per split, skipped files). Exit code 1 if anything was wrong."""
    from visionlab.data.classify import available_splits, load_split, parse_classify_data
    from visionlab.data.io import DataError

    source = parse_classify_data(spec)
    manifest: dict[str, Any] = {"data": spec, "kind": source.kind, "splits": {}}
    problems, classes = 0, None
    for split in available_splits(source):
        try:
            loaded = load_split(source, split, classes=classes)
        except DataError as e:
            console_.print(f"[red]{split}:[/] {e}", soft_wrap=True)
            manifest["splits"][split] = {"error": str(e)}
            problems += 1
            continue
        classes = classes or loaded.classes
        counts = np.bincount(loaded.labels.numpy(), minlength=len(loaded.classes))
        manifest["splits"][split] = {"images": len(loaded), "size": list(loaded.images.shape[1:]),
                                     "class_counts": dict(zip(loaded.classes, counts.tolist())),
                                     "skipped": loaded.skipped}
        for line in loaded.skipped:
            console_.print(f"[yellow]{split}: skipped[/] {line}", soft_wrap=True)
        problems += len(loaded.skipped)
        console_.print(f"{split}: {len(loaded):,} images, {len(loaded.classes)} classes, "
                       f"{len(loaded.skipped)} unreadable")
    manifest["classes"] = classes
    stem = "".join(ch if ch.isalnum() else "_" for ch in source.root.name)
    path = atomic_write_json(out or Path("runs") / "data" / f"{stem}_manifest.json", manifest)
    console_.print(f"manifest {path}; {problems} problem(s)")
    return 1 if problems else 0


# ----------------------------------------------------------------------------- figures and files


@torch.no_grad()
def prediction_grid(task: Any, model: nn.Module, dataset: Any, save_path: Path, device: torch.device,
                    n: int = 16) -> Path:
    """A 4-column grid of ``n`` images spread over the split, titled 'true / predicted (p)' (red if wrong)."""
    from visionlab.plots import plt

    split = dataset.split
    picks = sorted(set(np.linspace(0, len(split) - 1, min(n, len(split))).astype(int).tolist()))
    images = split.images[picks].permute(0, 2, 3, 1).numpy()
    rgb = [np.repeat(im, 3, 2) if im.shape[2] == 1 else im for im in images]
    results = task.infer(model, rgb, tuple(split.images.shape[-2:]), device)
    cols = 4
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax, im, i, res in zip(axes.flat, rgb, picks, results):
        truth = split.classes[int(split.labels[i])]
        ax.imshow(im, interpolation="nearest")
        ax.set_title(f"{truth} / {res.label} ({res.probs.max():.2f})", fontsize=7,
                     color="black" if truth == res.label else "red")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(save_path, dpi=100)
    plt.close(fig)
    return save_path


def write_predictions_csv(records: list[dict[str, Any]], path: Path) -> Path:
    """One row per image: name, top-1 class and probability, the top-k as 'class:p' pairs."""
    lines = ["image,label,prob,top"]
    for r in sorted(records, key=lambda r: r["name"]):
        top = " ".join(f"{c}:{p:.4f}" for c, p in r["top"])
        lines.append(f"{_csv_field(r['name'])},{_csv_field(r['label'])},{r['prob']:.6f},{_csv_field(top)}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_field(text: str) -> str:
    return f'"{text}"' if any(ch in text for ch in ',"\n') else text


# ----------------------------------------------------------------------------- pretrained=


def load_matching_weights(model: nn.Module, path: str | Path, min_coverage: float = 0.5) -> list[str]:
    """Copy every tensor of a visionlab checkpoint / state dict whose name and shape match ``model`` (a head
    for other classes is skipped); returns the skipped names. CheckpointError below ``min_coverage``."""
    from visionlab.utils.checkpoint import is_visionlab_checkpoint, load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained={path}: file not found")
    if is_visionlab_checkpoint(path):
        state = load_checkpoint(path)[0]
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (corrupt file or pickled code: one line)
            raise CheckpointError(f"pretrained={path}: cannot read as a weights file ({type(e).__name__})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else {}
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if len(fit) < min_coverage * len(own):
        raise CheckpointError(f"pretrained={path}: only {len(fit)} of the model's {len(own)} tensors match by "
                              "name and shape; is it a checkpoint of this architecture?")
    model.load_state_dict(fit, strict=False)
    return sorted(set(own) - set(fit))
