"""Matplotlib figures written into run folders (headless Agg backend)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(metrics_csv: Path, save_path: Path) -> Path:
    """One panel per column of metrics.csv (losses, metrics, lr) against epoch."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return save_path
    skip = {"epoch", "time_s", "peak_mem_mb"}
    keys = [k for k in rows[0] if k not in skip and not k.startswith("dice/")]
    epochs = [int(r["epoch"]) for r in rows]
    cols = 4
    nrows = max(1, int(np.ceil(len(keys) / cols)))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ys = [float(r[key]) if r[key] not in ("", "nan") else np.nan for r in rows]
        ax.plot(epochs, ys, marker="o", ms=3)
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(save_path, dpi=110)
    plt.close(fig)
    return save_path


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], save_path: Path, unit: str = "pixels") -> Path:
    """Row-normalised (recall) confusion matrix with counts' share in each cell."""
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(np.nan_to_num(norm), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in range(len(names)):
        for j in range(len(names)):
            if not np.isnan(norm[i, j]) and norm[i, j] >= 0.005:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"confusion matrix (rows: share of ground-truth {unit})")
    fig.tight_layout()
    fig.savefig(save_path, dpi=110)
    plt.close(fig)
    return save_path


def save_image_grid(rows: list[list[np.ndarray]], titles: list[str], save_path: Path) -> Path:
    """rows of equally sized HxWx3 uint8 panels, e.g. [image, ground truth, prediction] per sample."""
    n, m = len(rows), len(rows[0])
    fig, axes = plt.subplots(n, m, figsize=(3.2 * m, 2.4 * n), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            axes[r, c].imshow(panel)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
    fig.tight_layout()
    fig.savefig(save_path, dpi=100)
    plt.close(fig)
    return save_path
