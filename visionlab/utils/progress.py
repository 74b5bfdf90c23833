"""Rich progress bars with ETA, silent on non-zero DDP ranks and when VISIONLAB_PROGRESS=0."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=False, highlight=False)


def enabled() -> bool:
    return os.environ.get("VISIONLAB_PROGRESS", "1") != "0" and int(os.environ.get("RANK", "0")) == 0


def make_progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
        disable=not enabled(),
    )


def track(items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
