"""Depth dataset over every layout of ``depth_layouts.py`` (folders, NYU .mat, YAML sources, pseudo labels)
or the synthetic scenes, mirroring ``SegmentationDataset`` (RAM cache, threaded decoding, seeded subset).

A sample is ``{"image": uint8 3xHxW RGB, "target": float32 1xHxW, "valid": bool 1xHxW, "space": 0 (depth,
metres or the dataset's unit) | 1 (disparity), "index": i, "source": name, "min_depth"/"max_depth": float
(NaN = not set)}``. Training samples are resized (target and mask nearest-neighbour: a depth is never
blended with an invalid 0 or across an object edge) and augmented to the network size; evaluation samples
keep the target at native resolution (only the image is resized), so metrics use the real ground truth.

Validity: target > 0 and finite (disparity labels: >= 0 for dense pseudo labels), within
[min_depth, max_depth] for depth targets, and at evaluation inside the source's eval crop (Eigen/Garg).
Synthetic sky (depth 1000 m) is valid for training (it teaches "far") but not scored at evaluation. A share
``synthetic_rooms`` of the synthetic scenes are indoor rooms (``synthetic_rooms.render_room``), the rest streets;
``synthetic_textures`` paints the rooms' surfaces with real photos (``textures``).

Files that cannot be used (corrupt or truncated, under 32 px a side, RGB/depth size mismatch, unpaired) are
named in ``dataset.skipped`` and left out, never trained on; a DataError if nothing is left. Every file
is decoded once at construction to find them (kept in RAM when ``cache``).
"""

from __future__ import annotations

import json
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from visionlab.data.depth_layouts import (
    SPLITS,
    DepthItem,
    DepthSource,
    NyuMat,
    list_depth_items,
    parse_depth_spec,
    read_depth_png,
    read_disparity_npy,
)
from visionlab.data.io import IMAGE_SUFFIXES, DataError, PathLike, read_image
from visionlab.data.segmentation import SYNTHETIC_SEED_BASE, resize_image, resize_mask
from visionlab.data.synthetic_base import check_render_size
from visionlab.data.synthetic_rooms import is_room
from visionlab.data.transforms import train_transform
from visionlab.metrics.depth import eval_crop_mask
from visionlab.utils.progress import track

PSEUDO_VAL_EVERY = 20  # pseudo-label folders: every 20th image is validation
MIN_SIDE = 32  # smaller images are skipped: nothing a dense model can learn from, and crops would fail
Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (imgsz) HxWx3 uint8, target float32, valid bool


class DepthDataset(Dataset):
    """Depth samples for ``split`` (see the module docstring). ``sources`` overrides ``cfg.data``."""

    def __init__(self, cfg: Any, split: str, train: bool, sources: list[DepthSource] | None = None):
        self.sources = sources or parse_depth_spec(cfg.data, cfg)
        self.size = tuple(cfg.imgsz)
        self.train, self.split = train, split
        self.transform = train_transform(cfg, mask_fill=0) if train else None  # padding is invalid depth
        self.skipped: list[str] = []
        self._mats: dict[int, NyuMat] = {}
        self._scales: dict[int, dict[str, float]] = {}
        self.textures = None  # real photos for the synthetic rooms' surfaces (read lazily, per worker)
        if cfg.synthetic_textures and any(s.kind == "synthetic" for s in self.sources):
            from visionlab.data.textures import TextureBank

            self.textures = TextureBank(cfg.synthetic_textures)
        items: list[DepthItem] = []
        for si, source in enumerate(self.sources):
            if source.kind == "synthetic":
                check_render_size(self.size)
                if split not in SYNTHETIC_SEED_BASE:
                    raise DataError(f"data=synthetic has splits train, val and test, not '{split}'")
                n = cfg.synthetic_train if split == "train" else cfg.synthetic_val
                base = SYNTHETIC_SEED_BASE[split]
                items += [DepthItem(si, f"{'room' if is_room(base + i, cfg.synthetic_rooms) else 'scene'}_{base + i:07d}",
                                    None, base + i, "synthetic") for i in range(n)]
                continue
            if source.kind == "nyu_mat":
                self._mats[si] = NyuMat(source.root)
            if source.kind == "pseudo":
                self._scales[si] = pseudo_scales(source.root)
                items += pseudo_items(source, si, split)
                continue
            items += list_depth_items(source, si, split, self.skipped)
        if train and cfg.fraction < 1.0:  # a seeded subset, the same for every run with this seed
            keep = np.random.default_rng(cfg.seed).permutation(len(items))[: max(1, round(len(items) * cfg.fraction))]
            items = [items[i] for i in sorted(keep)]
        self.items = items
        self.cache: list[Sample] | None = None
        self._scan(cache=bool(cfg.cache))
        if not self.items:
            shown = "; ".join(self.skipped[:3])
            raise DataError(f"data={cfg.data}: no usable depth samples in split '{split}' ({shown})", "missing")
        if self.skipped:
            warnings.warn(f"{len(self.skipped)} depth file(s) skipped, e.g. {self.skipped[0]} "
                          "(all in dataset.skipped)", stacklevel=2)

    def __len__(self) -> int:
        return len(self.items)

    def name_of(self, index: int) -> str:
        return self.items[index].name

    def path_of(self, index: int) -> Path | str:
        """The RGB file of a sample (``synthetic:<name>`` or ``<file.mat>#<i>`` when there is none)."""
        item = self.items[index]
        if item.image is not None:
            return item.image
        source = self.sources[item.source]
        return f"synthetic:{item.name}" if item.fmt == "synthetic" else f"{source.root}#{item.target}"

    def source_of(self, index: int) -> DepthSource:
        return self.sources[self.items[index].source]

    # ------------------------------------------------------------------------- loading

    def _read(self, item: DepthItem) -> tuple[np.ndarray, np.ndarray, int]:
        """Native-size (RGB, target, space) of an item; DataError names the file on any problem."""
        source = self.sources[item.source]
        if item.fmt == "synthetic":
            from visionlab.data.synthetic import render_scene
            from visionlab.data.synthetic_rooms import render_room

            scene = (render_room(int(item.target), *self.size, textures=self.textures) if item.name.startswith("room")
                     else render_scene(int(item.target), *self.size))
            return scene.image, scene.depth, 0
        if item.fmt == "nyu_mat":
            image, depth = self._mats[item.source].read(int(item.target))
            return image, depth, 0
        image = read_image(item.image)
        if item.fmt == "depth_png":
            target, space = read_depth_png(item.target, source.depth_scale), 0
        elif item.fmt == "disp_npy":
            target, space = read_disparity_npy(item.target), 1
        else:  # pseudo label: dense disparity (uint16 PNG or float32 .npy) times the manifest's scale
            raw = read_disparity_npy(item.target) if Path(item.target).suffix == ".npy" else read_depth_png(item.target, 1.0)
            target = raw * np.float32(self._scales[item.source][item.name])
            space = 1
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise DataError(f"{item.image}: {w}x{h} image; expected at least {MIN_SIDE} px a side", "too_small")
        if target.shape != (h, w):
            raise DataError(f"{item.target}: depth is {target.shape[1]}x{target.shape[0]} but its image "
                            f"{item.image.name} is {w}x{h}", "size_mismatch")
        return image, target, space

    def _valid(self, item: DepthItem, target: np.ndarray, space: int) -> np.ndarray:
        source = self.sources[item.source]
        valid = np.isfinite(target) & ((target >= 0) if item.fmt == "pseudo" else (target > 0))
        if space == 0:
            if source.min_depth is not None:
                valid &= target >= source.min_depth
            if source.max_depth is not None:
                valid &= target <= source.max_depth
            if item.fmt == "synthetic" and not self.train:
                from visionlab.data.synthetic_base import SKY_DEPTH

                valid &= target < SKY_DEPTH
        if not self.train and source.eval_crop is not None:
            valid &= eval_crop_mask(*target.shape, source.eval_crop)
        return valid

    def _load(self, index: int) -> Sample:
        item = self.items[index]
        image, target, space = self._read(item)
        valid = self._valid(item, target, space)
        target = np.where(valid, target, 0).astype(np.float32)  # invalid pixels never carry a value
        image = resize_image(image, self.size)
        if self.train:
            target = resize_mask(target, self.size)
            valid = resize_mask(valid.view(np.uint8), self.size).astype(bool)
        return image, target, valid

    def _scan(self, cache: bool) -> None:
        """Decode everything once (threads: decoding releases the GIL); drop unusable files into skipped."""
        if not cache and all(it.fmt in ("synthetic", "nyu_mat") for it in self.items):
            return  # generated / one trusted file: nothing to find, nothing to keep

        def attempt(i: int) -> Sample | str | None:
            if not cache and self.items[i].fmt in ("synthetic", "nyu_mat"):
                return None  # nothing to check, nothing to keep
            try:
                return self._load(i)
            except DataError as e:
                return str(e)

        with ThreadPoolExecutor(max_workers=4) as pool:
            it = pool.map(attempt, range(len(self)))
            loaded = list(track(it, total=len(self), description=f"reading {self.split} ({len(self)} images)"))
        keep = [i for i, x in enumerate(loaded) if not isinstance(x, str)]
        self.skipped += [x + " (skipped)" for x in loaded if isinstance(x, str)]
        self.items = [self.items[i] for i in keep]
        self.cache = [loaded[i] for i in keep] if cache else None  # type: ignore[misc]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target, valid = self.cache[index] if self.cache is not None else self._load(index)
        if self.transform is not None:
            out = self.transform(image=image, masks=[target, valid.astype(np.float32)])
            image, (target, valid) = out["image"], out["masks"]
            valid = np.asarray(valid) > 0.5
        source = self.sources[self.items[index].source]
        space = 0 if self.items[index].fmt in ("synthetic", "nyu_mat", "depth_png") else 1
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None],
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None],
            "space": space,
            "index": index,
            "source": source.name,
            "min_depth": source.min_depth if source.min_depth is not None else math.nan,
            "max_depth": source.max_depth if source.max_depth is not None else math.nan,
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: images stacked; targets/valid stacked when all the same size, else lists (native-size
    evaluation targets); space/index as int64 tensors, min/max depth as float64, anything else as lists."""
    out: dict[str, Any] = {"image": torch.stack([s["image"] for s in samples])}
    for key in ("target", "valid"):
        values = [s[key] for s in samples]
        same = len({tuple(v.shape) for v in values}) == 1
        out[key] = torch.stack(values) if same else values
    out["space"] = torch.tensor([s["space"] for s in samples], dtype=torch.int64)
    out["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.int64)
    for key in ("min_depth", "max_depth"):
        out[key] = torch.tensor([s.get(key, math.nan) for s in samples], dtype=torch.float64)
    for key in samples[0]:
        if key not in out:
            out[key] = [s[key] for s in samples]
    return out


# ----------------------------------------------------------------------------- unlabeled images + pseudo labels


def list_unlabeled(folder: PathLike, expected: str = "a folder of images to pseudo-label") -> list[Path]:
    """Every image under ``folder`` (recursive, sorted, hidden files skipped), for pseudo-labelling (or any use
    named by ``expected`` in the error when ``folder`` is not a directory)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory; expected {expected}", "missing")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})", "missing")
    return sorted(files)


def write_pseudo_label(
    out_dir: PathLike, name: str, disparity: np.ndarray, image: PathLike | None = None
) -> dict[str, Any]:
    """Save ``disparity`` (HxW, >= 0, at the image's native size) as ``out_dir/labels/<name>.png``, uint16
    scaled so the image's max is 65535. Returns the manifest item {"name", "image", "label", "scale"}
    (disparity = png value * scale); collect the items and pass them to ``write_pseudo_manifest``."""
    from PIL import Image

    disparity = np.asarray(disparity, dtype=np.float64).squeeze()
    if disparity.ndim != 2 or not np.all(np.isfinite(disparity)):
        raise ValueError(f"pseudo label '{name}': expected a finite HxW disparity map, got shape {disparity.shape}")
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"pseudo label name {name!r} invalid; expected a plain file stem")
    disparity = np.clip(disparity, 0, None)
    peak = float(disparity.max()) if disparity.size else 0.0
    scale = peak / 65535.0
    png = np.round(disparity / scale).astype(np.uint16) if scale > 0 else np.zeros(disparity.shape, np.uint16)
    path = Path(out_dir) / "labels" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(png).save(path)
    return {"name": name, "image": str(Path(image).resolve()) if image is not None else None,
            "label": f"labels/{name}.png", "scale": scale}


def write_pseudo_manifest(out_dir: PathLike, items: list[dict[str, Any]], **info: Any) -> Path:
    """Write ``out_dir/manifest.json`` = {"items": [...], **info} (e.g. teacher=..., imgsz=...)."""
    path = Path(out_dir) / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"items": items, **info}, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a manifest
    return path


def _manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; expected a pseudo-label manifest", "missing") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})", "corrupt") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise DataError(f"{path}: expected {{\"items\": [{{\"name\", \"image\", \"scale\"}}, ...]}}")
    for i, item in enumerate(data["items"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "scale" not in item:
            raise DataError(f"{path}: items[{i}] lacks 'name' / 'scale'")
    return data


def _manifest_items(out_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, image, label file) per manifest item; the label defaults to labels/<name>.png."""
    items = []
    for i, item in enumerate(_manifest(out_dir)["items"]):
        if not item.get("image"):
            raise DataError(f"{out_dir / 'manifest.json'}: items[{i}] ('{item['name']}') has no 'image' path")
        image = Path(item["image"])
        label = out_dir / (item.get("label") or f"labels/{item['name']}.png")
        items.append((item["name"], image if image.is_absolute() else out_dir / image, label))
    return items


def read_pseudo_label(out_dir: PathLike, name: str, scale: float | None = None) -> np.ndarray:
    """float32 HxW disparity of pseudo label ``name`` (png value * scale; scale from the manifest if None)."""
    out_dir = Path(out_dir)
    if scale is None:
        found = [it["scale"] for it in _manifest(out_dir)["items"] if it["name"] == name]
        if not found:
            raise DataError(f"{out_dir / 'manifest.json'}: no item named '{name}'")
        scale = float(found[0])
    path = out_dir / "labels" / f"{name}.png"
    raw = read_depth_png(path, 1.0)  # the uint16 values themselves
    return (raw.astype(np.float64) * float(scale)).astype(np.float32)


def pseudo_items(source: DepthSource, index: int, split: str) -> list[DepthItem]:
    """Items of a pseudo-label folder: ``train`` = all but every 20th manifest item, ``val``/``test`` = every 20th."""
    root = source.root
    assert root is not None
    if split not in SPLITS:
        raise DataError(f"{root}: split '{split}' invalid; a pseudo-label folder has splits train, val, test")
    items = [DepthItem(index, n, img, label, "pseudo") for n, img, label in _manifest_items(root)]
    is_val = split != "train"
    return [it for i, it in enumerate(items) if (i % PSEUDO_VAL_EVERY == 0) == is_val]


def pseudo_scales(out_dir: Path) -> dict[str, float]:
    """name -> scale of every manifest item (read once, not per sample)."""
    return {it["name"]: float(it["scale"]) for it in _manifest(out_dir)["items"]}
