"""Turn a ``source=`` value (image, folder, or dataset spec) into a list of image paths."""

from __future__ import annotations

from pathlib import Path

from visionlab.data.io import IMAGE_SUFFIXES, DataError


def list_sources(source: str | None) -> list[Path]:
    if not source:
        raise DataError("no source given: pass source=IMAGE, source=FOLDER or source=camvid:DIR (etc.)")
    path = Path(source)
    if not path.exists() and ":" not in source:
        raise DataError(f"source={source}: no such file or folder")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    is_dataset = (path / "leftImg8bit").is_dir() or ((path / "images").is_dir() and (path / "masks").is_dir())
    if path.is_dir() and not is_dataset:
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"source={source}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise DataError(f"source={source}: not an image ({', '.join(IMAGE_SUFFIXES)}), folder or dataset YAML")
    # a dataset spec: predict on every image of its val split (or the first split that exists)
    from visionlab.data.layouts import list_pairs, parse_data_spec

    spec = parse_data_spec(source)
    for split in ("val", "test", "train") if spec.kind != "synthetic" else ():
        if split in spec.splits or _split_exists(spec, split):
            return [image for image, _ in list_pairs(spec, split)]  # real problems in a split are raised
    raise DataError(f"source={source}: no val, test or train split with images found")


def _split_exists(spec, split: str) -> bool:
    from visionlab.data.layouts import scan_split

    try:
        return bool(scan_split(spec, split).pairs)
    except DataError:
        return False


def output_names(paths: list[Path]) -> list[str]:
    """Unique output names: the file stem, or the path relative to the common folder when stems clash
    (day1/IMG_1.jpg and day2/IMG_1.jpg -> day1__IMG_1_jpg, day2__IMG_1_jpg)."""
    import os
    from collections import Counter

    counts = Counter(p.stem for p in paths)
    if all(n == 1 for n in counts.values()):
        return [p.stem for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return [str(p.relative_to(root).with_suffix("")).replace(os.sep, "__") + p.suffix.replace(".", "_")
            if counts[p.stem] > 1 else p.stem for p in paths]
