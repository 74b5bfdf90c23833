"""Depth data layouts: which files hold RGB and depth, their units and the evaluation protocol.

``data=`` forms (a folder is recognised by its files):

- ``synthetic``: the procedural scenes of ``visionlab.data.synthetic`` (metric depth in metres).
- a folder of pairs ``<id>_rgb.(png|jpg)`` + ``<id>_disp.npy`` (float disparity, 0 = invalid) or
  ``<id>_depth.png`` (uint16, metres = value / depth_scale); also ``rgb.png`` + ``depth.png``, and
  ``<id>.jpg`` + ``<id>.png`` (mmseg NYU fixture style: the PNG is the uint16 depth).
- a folder with ``rgb/`` + ``depth/`` (or ``disp/``) subfolders, paired by name after stripping known
  prefixes/suffixes (``rgb_00050.jpg`` <-> ``sync_depth_00050.png``); ambiguous pairing is refused.
- a folder with ``train/``, ``val/``, ``test/`` subfolders, each one of the above. A folder without them is
  one set returned for every split (evaluation sets; do not train and validate on it).
- ``nyu:PATH``, ``kitti:PATH``, ``tum:PATH`` (``folder:PATH`` = no defaults): the same folders with that
  dataset's defaults (NYU: /1000, max 10 m, Eigen crop; KITTI: /256, max 80 m, Garg crop; TUM: /5000).
- the NYU Depth V2 labeled ``.mat`` (MATLAB v7.3 = HDF5, read lazily with h5py; NYU defaults).
- a dataset YAML with ``sources:`` (each: name, path relative to the YAML, depth_scale, min_depth,
  max_depth, eval_crop), for mixing evaluation sets with their own units and protocol; ``path: synthetic``
  adds the procedural scenes (``synthetic_train`` / ``synthetic_val`` of them), e.g. beside pseudo labels.
- a pseudo-label folder (``manifest.json`` + ``labels/<name>.png``, see ``depth.write_pseudo_label``): split
  ``train`` = all but every 20th image, ``val`` = every 20th (deterministic).

Settings precedence for a source: its YAML entry > the task config (depth_scale, min_depth, max_depth,
eval_crop when not None) > the dataset kind's defaults. ``eval_crop="none"`` disables a default crop.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionlab.data.io import IMAGE_SUFFIXES, DataError, PathLike, _decode, _open

SPLITS = ("train", "val", "test")
ACCEPTED_FORMS = (
    "synthetic | DIR of <id>_rgb.png + <id>_depth.png/<id>_disp.npy | DIR with rgb/ + depth/ | "
    "nyu:DIR | kitti:DIR | tum:DIR | folder:DIR | nyu_depth_v2_labeled.mat | dataset.yaml with sources: | "
    "a pseudo-label DIR (manifest.json + labels/)"
)
# dataset kind -> defaults (depth_scale, min_depth, max_depth, eval_crop)
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "nyu": {"depth_scale": 1000.0, "min_depth": 1e-3, "max_depth": 10.0, "eval_crop": "eigen"},
    "kitti": {"depth_scale": 256.0, "min_depth": 1e-3, "max_depth": 80.0, "eval_crop": "garg"},
    "tum": {"depth_scale": 5000.0},
    "folder": {},
}
_SOURCE_KEYS = {"name", "path", "depth_scale", "min_depth", "max_depth", "eval_crop", "format"}
_RGB_DIRS, _DEPTH_DIRS = ("rgb", "image", "images", "color"), ("depth", "disp")
# name parts that say "this is the RGB / the depth file", stripped to pair rgb/ with depth/ files
_STRIP = re.compile(
    r"^(?:rgb|color|colour|image|img|sync_depth|depth|disp)_|_(?:rgb|color|colour|image|img|depth|disp)$"
)


@dataclass(frozen=True)
class DepthSource:
    """One set of depth files with its units and evaluation protocol."""

    name: str
    kind: str  # synthetic | folder | nyu_mat | pseudo
    root: Path | None
    depth_scale: float | None = None
    min_depth: float | None = None
    max_depth: float | None = None
    eval_crop: str | None = None


@dataclass(frozen=True)
class DepthItem:
    """One sample. ``target`` is a file (depth PNG / disparity npy / pseudo label), a synthetic seed or a
    .mat index; ``fmt`` says which: depth_png | disp_npy | pseudo | synthetic | nyu_mat."""

    source: int
    name: str
    image: Path | None
    target: Path | int
    fmt: str


# ----------------------------------------------------------------------------- readers


def read_depth_png(path: PathLike, depth_scale: float) -> np.ndarray:
    """A uint16 depth PNG -> float32 HxW metres (value / depth_scale; 0 stays 0 = invalid)."""
    path = Path(path)
    if not depth_scale or depth_scale <= 0:
        raise DataError(f"{path}: depth_scale={depth_scale!r}; expected a positive divisor (e.g. 1000 for mm)")
    with _open(path) as img:
        _decode(img, path)
        if not (img.mode.startswith("I;16") or img.mode == "I"):
            raise DataError(f"{path}: depth PNG has mode {img.mode}; expected a 16-bit single-channel PNG", "bad_label")
        raw = np.asarray(img)
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) > 65535):
        raise DataError(f"{path}: depth values outside 0..65535; expected a uint16 depth PNG", "bad_label")
    return (raw.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)


def read_disparity_npy(path: PathLike) -> np.ndarray:
    """A float disparity .npy (HxW, or 1xHxW / HxWx1) -> float32 HxW; NaN, inf and negatives become 0."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist (expected a disparity .npy)", "missing") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})", "corrupt") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        what = f"array of shape {arr.shape} dtype {arr.dtype}"
        raise DataError(f"{path}: {what}; expected an HxW float disparity map", "bad_label")
    arr = arr.astype(np.float32)
    arr[~np.isfinite(arr) | (arr < 0)] = 0.0
    return arr


class NyuMat:
    """Lazy reader of the NYU Depth V2 labeled .mat (HDF5): ``images`` [N,3,W,H] uint8, ``depths`` [N,W,H]
    metres (MATLAB's column-major HxWx3xN seen transposed by h5py). The file opens on first read, in
    each DataLoader worker (an h5py handle cannot be pickled)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: Any = None
        f = self._h5()
        images, depths = f.get("images"), f.get("depths")
        if images is None or depths is None:
            raise DataError(f"{path}: no 'images' and 'depths' datasets; expected the NYU Depth V2 labeled .mat")
        if images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3 or images.shape[0] != depths.shape[0] \
                or tuple(images.shape[2:]) != tuple(depths.shape[1:]):
            raise DataError(f"{path}: images {images.shape} / depths {depths.shape}; expected [N,3,W,H] and [N,W,H]")
        self.length = int(images.shape[0])

    def _h5(self) -> Any:
        if self._file is None:
            try:
                import h5py
            except ImportError:
                raise DataError(f"{self.path}: reading the NYU .mat needs h5py (pip install h5py)") from None
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                msg = f"not a MATLAB v7.3 (HDF5) file ({e}); expected nyu_depth_v2_labeled.mat"
                raise DataError(f"{self.path}: {msg}") from None
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "length": self.length}

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB, HxW float32 metres) of frame ``i``."""
        f = self._h5()
        image = np.ascontiguousarray(np.asarray(f["images"][i]).transpose(2, 1, 0), dtype=np.uint8)
        depth = np.ascontiguousarray(np.asarray(f["depths"][i]).T, dtype=np.float32)
        return image, depth


# ----------------------------------------------------------------------------- parsing data=


def _num(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{where}: {key}={value!r}; expected a positive number")
    return float(value)


def _crop(value: Any, where: str) -> str | None:
    if value is None or value == "none":
        return value
    if value not in ("eigen", "garg"):
        raise DataError(f"{where}: eval_crop={value!r}; expected eigen, garg or none")
    return value


def _source(
    name: str, kind: str, root: Path | None, defaults: dict, explicit: dict, cfg: Any, where: str
) -> DepthSource:
    """Precedence: explicit (YAML entry) > cfg (non-None) > kind defaults."""
    values: dict[str, Any] = {}
    for key in ("depth_scale", "min_depth", "max_depth", "eval_crop"):
        value = explicit.get(key)
        if value is None:
            value = getattr(cfg, key, None)
        if value is None:
            value = defaults.get(key)
        values[key] = _crop(value, where) if key == "eval_crop" else _num(value, key, where)
    if values["eval_crop"] == "none":
        values["eval_crop"] = None
    return DepthSource(name, kind, root, **values)


def _is_pseudo_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() and (path / "labels").is_dir()


def parse_depth_spec(spec: str, cfg: Any = None) -> list[DepthSource]:
    """A ``data=`` value -> its sources (one, or several for a YAML with ``sources:``)."""
    spec = str(spec).strip()
    if spec == "synthetic":
        return [_source("synthetic", "synthetic", None, {}, {}, cfg, "data=synthetic")]
    kind, sep, rest = spec.partition(":")
    if sep and kind in KIND_DEFAULTS and len(kind) > 1:
        if not rest:
            raise DataError(f"data={spec}: missing path after '{kind}:'; expected {kind}:DIR")
        return [_path_source(Path(rest).expanduser(), kind, {}, cfg, f"data={spec}")]
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"data={spec}: dataset YAML {path} does not exist", "missing")
        return _yaml_sources(path, cfg)
    if path.exists():
        return [_path_source(path, "folder", {}, cfg, f"data={spec}")]
    if sep and len(kind) > 1 and "/" not in kind:  # data=camvid:DIR: a KIND: prefix depth does not know
        raise DataError(f"data={spec}: '{kind}:' is not a depth dataset kind (known: "
                        f"{', '.join(sorted(KIND_DEFAULTS))}); accepted forms: {ACCEPTED_FORMS}")
    raise DataError(f"data={spec}: {path} does not exist; accepted forms: {ACCEPTED_FORMS}", "missing")


def _path_source(path: Path, kind: str, explicit: dict, cfg: Any, where: str, name: str | None = None) -> DepthSource:
    if not path.exists():
        raise DataError(f"{where}: {path} does not exist", "missing")
    name = name or path.stem
    if path.is_file():
        if path.suffix.lower() != ".mat":
            raise DataError(f"{where}: {path} is a file; expected a folder, a .mat or a dataset YAML")
        return _source(name, "nyu_mat", path, KIND_DEFAULTS["nyu"], explicit, cfg, where)
    if _is_pseudo_dir(path):
        return _source(name, "pseudo", path, {}, explicit, cfg, where)
    return _source(name, "folder", path, KIND_DEFAULTS[kind], explicit, cfg, where)


def _yaml_sources(path: Path, cfg: Any) -> list[DepthSource]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read dataset YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise DataError(f"{path}: expected a mapping with a non-empty 'sources:' list (name, path, depth_scale, ...)")
    unknown = sorted(set(map(str, data)) - {"name", "sources"})
    if unknown:
        raise DataError(f"{path}: unknown keys {unknown}; expected 'name' and 'sources'")
    sources, names = [], set()
    for i, entry in enumerate(data["sources"]):
        where = f"{path}: sources[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            raise DataError(f"{where}: expected a mapping with at least 'path'")
        bad = sorted(set(map(str, entry)) - _SOURCE_KEYS)
        if bad:
            raise DataError(f"{where}: unknown keys {bad}; expected among {sorted(_SOURCE_KEYS)}")
        synthetic = str(entry["path"]) == "synthetic"  # the procedural scenes, e.g. beside pseudo labels
        fmt = entry.get("format", "folder")
        if fmt not in KIND_DEFAULTS:
            raise DataError(f"{where}: format={fmt!r}; expected one of {', '.join(KIND_DEFAULTS)}")
        root = Path(str(entry["path"])).expanduser()
        root = root if root.is_absolute() else path.parent / root  # relative to the YAML
        name = str(entry.get("name") or ("synthetic" if synthetic else root.stem))
        if name in names:
            raise DataError(f"{where}: source name '{name}' used twice; expected unique names")
        names.add(name)
        sources.append(_source(name, "synthetic", None, {}, entry, cfg, where) if synthetic
                       else _path_source(root, fmt, entry, cfg, where, name))
    return sources


# ----------------------------------------------------------------------------- listing items


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def _pair_flat(directory: Path, skipped: list[str]) -> list[tuple[str, Path, Path, str]]:
    """(name, rgb, target, fmt) pairs of one flat folder; unpaired files go to ``skipped``."""
    files = _image_files(directory)
    rgb: dict[str, Path] = {}
    targets: dict[str, tuple[Path, str]] = {}

    def put(table: dict, key: str, value: Any, what: str) -> None:
        if key in table:
            other = table[key][0] if isinstance(table[key], tuple) else table[key]
            raise DataError(f"{directory}: ambiguous {what} for '{key or directory.name}': {other.name} and "
                            f"{(value[0] if isinstance(value, tuple) else value).name}; expected exactly one")
        table[key] = value

    for p in files:
        stem, suffix = p.stem, p.suffix.lower()
        m = re.fullmatch(r"(?:(.*)_)?(rgb|disp|depth)", stem)
        if not m:
            continue
        key, role = m.group(1) or "", m.group(2)
        if role == "rgb" and suffix in IMAGE_SUFFIXES:
            put(rgb, key, p, "RGB images")
        elif role == "disp" and suffix == ".npy":
            put(targets, key, (p, "disp_npy"), "depth/disparity files")
        elif role == "depth" and suffix == ".png":
            put(targets, key, (p, "depth_png"), "depth/disparity files")
    if not rgb:  # mmseg style: <id>.jpg + <id>.png (uint16 depth), or <id>.<image> + <id>.npy (disparity)
        by_stem: dict[str, list[Path]] = {}
        for p in files:
            by_stem.setdefault(p.stem, []).append(p)
        for stem, group in by_stem.items():
            suffixes = {p.suffix.lower(): p for p in group}
            jpg = suffixes.get(".jpg") or suffixes.get(".jpeg")
            if jpg is not None and ".png" in suffixes:
                rgb[stem], targets[stem] = jpg, (suffixes[".png"], "depth_png")
            elif ".npy" in suffixes:
                images = [p for p in group if p.suffix.lower() in IMAGE_SUFFIXES]
                if len(images) == 1:
                    rgb[stem], targets[stem] = images[0], (suffixes[".npy"], "disp_npy")
    pairs = _join(rgb, targets, skipped, "no depth/disparity file for this image", "no RGB image for this depth file")
    return [(key or directory.name, *rest) for key, *rest in pairs]


def _join(images: dict[str, Path], targets: dict[str, tuple[Path, str]], skipped: list[str], no_target: str,
          no_image: str) -> list[tuple[str, Path, Path, str]]:
    """(key, rgb, target, fmt) for keys in both tables, sorted; a key in one table only goes to ``skipped``."""
    pairs = []
    for key in sorted(set(images) | set(targets)):
        if key not in targets:
            skipped.append(f"{images[key]}: {no_target} (skipped)")
        elif key not in images:
            skipped.append(f"{targets[key][0]}: {no_image} (skipped)")
        else:
            pairs.append((key, images[key], *targets[key]))
    return pairs


def _strip_key(stem: str) -> str:
    return _STRIP.sub("", stem)


def _pair_subfolders(rgb_dir: Path, depth_dir: Path, skipped: list[str]) -> list[tuple[str, Path, Path, str]]:
    """rgb/ + depth/ pairing by name after stripping rgb_/sync_depth_/_depth ...; ambiguity is refused."""
    def index(files: list[Path], where: Path) -> dict[str, Path]:
        table: dict[str, Path] = {}
        for p in files:
            key = _strip_key(p.stem)
            if key in table:
                raise DataError(f"{where}: {table[key].name} and {p.name} both pair as '{key}'; expected unique names")
            table[key] = p
        return table

    images = index([p for p in _image_files(rgb_dir) if p.suffix.lower() in IMAGE_SUFFIXES], rgb_dir)
    depths = index([p for p in _image_files(depth_dir) if p.suffix.lower() in (".png", ".npy")], depth_dir)
    targets = {k: (p, "disp_npy" if p.suffix.lower() == ".npy" else "depth_png") for k, p in depths.items()}
    return _join(images, targets, skipped, f"no file named like it in {depth_dir}",
                 f"no file named like it in {rgb_dir}")


def _pair_folder(directory: Path, skipped: list[str]) -> list[tuple[str, Path, Path, str]]:
    rgb_dir = next((directory / d for d in _RGB_DIRS if (directory / d).is_dir()), None)
    depth_dir = next((directory / d for d in _DEPTH_DIRS if (directory / d).is_dir()), None)
    if rgb_dir is not None and depth_dir is not None:
        return _pair_subfolders(rgb_dir, depth_dir, skipped)
    return _pair_flat(directory, skipped)


def list_depth_items(source: DepthSource, index: int, split: str, skipped: list[str]) -> list[DepthItem]:
    """The items of one (file-based) source for ``split``; unpaired files are appended to ``skipped``."""
    root = source.root
    assert root is not None
    if source.kind == "nyu_mat":
        return [DepthItem(index, f"{source.name}_{i:05d}", None, i, "nyu_mat") for i in range(NyuMat(root).length)]
    if source.kind == "pseudo":
        raise ValueError("pseudo-label folders are listed by visionlab.data.depth.pseudo_items")
    directory = root / split if any((root / s).is_dir() for s in SPLITS) else root
    if not directory.is_dir():
        existing = ", ".join(s for s in SPLITS if (root / s).is_dir())
        raise DataError(f"{directory}: split '{split}' not found (existing splits: {existing})", "missing")
    pairs = _pair_folder(directory, skipped)
    if not pairs:
        raise DataError(f"{directory}: no RGB + depth pairs; accepted forms: {ACCEPTED_FORMS}", "missing")
    if any(fmt == "depth_png" for *_, fmt in pairs) and source.depth_scale is None:
        raise DataError(f"{directory}: uint16 depth PNGs need a depth_scale (metres = value / depth_scale: "
                        "1000 for mm, 256 KITTI, 5000 TUM); set depth_scale= or use nyu:/kitti:/tum:")
    return [DepthItem(index, name, rgb, target, fmt) for name, rgb, target, fmt in pairs]
