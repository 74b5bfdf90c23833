"""The interface every task's metrics implement (kept apart from tasks to avoid import cycles)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch


class Metrics(ABC):
    """Accumulates predictions over an evaluation pass (reduced across ranks under DDP)."""

    @abstractmethod
    def update(self, outputs: torch.Tensor, batch: dict[str, Any]) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Scalar metrics by name; must include the task's ``fitness_key``."""

    def report(self, console: Any) -> None:
        """Print a human-readable summary (tables) of the last compute()."""

    def save_plots(self, save_dir: Path) -> list[Path]:
        return []
