"""Turn a ``source=`` value (image, folder, or a dataset the task understands) into a list of image paths."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from visionlab.data.io import IMAGE_SUFFIXES, DataError


def list_sources(source: str | None, task: Any) -> list[Path]:
    """An image file; a dataset spec the task recognises (``task.dataset_images``: e.g. camvid:DIR -> the
    images of its val split); else every image under a folder."""
    if not source:
        raise DataError("no source given: pass source=IMAGE, source=FOLDER or a dataset spec")
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    images = task.dataset_images(source)
    if images is not None:
        return images
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"source={source}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise DataError(f"source={source}: no such file or folder")
    raise DataError(f"source={source}: not an image ({', '.join(IMAGE_SUFFIXES)}), a folder or a dataset "
                    f"{task.name} reads")


def output_names(paths: list[Path]) -> list[str]:
    """Unique output names: the file stem, or the path relative to the common folder when stems clash
    (day1/IMG_1.jpg and day2/IMG_1.jpg -> day1__IMG_1_jpg, day2__IMG_1_jpg)."""
    counts = Counter(p.stem for p in paths)
    if all(n == 1 for n in counts.values()):
        return [p.stem for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return [str(p.relative_to(root).with_suffix("")).replace(os.sep, "__") + p.suffix.replace(".", "_")
            if counts[p.stem] > 1 else p.stem for p in paths]
