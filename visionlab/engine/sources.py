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
    if path.is_dir() and not (path / "leftImg8bit").is_dir() and not (path / "images").is_dir():
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
    for split in ("val", "test", "train"):
        try:
            return [image for image, _ in list_pairs(spec, split)]
        except DataError:
            continue
    raise DataError(f"source={source}: no split with images found")
