"""Dataset layouts (Cityscapes, CamVid, image/mask folders, dataset YAML) and label-id mappings.

Every layout is mapped to the 8 Cityscapes categories of ``categories.py`` through a 256-entry
lookup table (raw label id -> category id, or IGNORE_INDEX). Ids a format does not define are
"unknown": ``map_label`` refuses them instead of silently training on garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visionlab.data.categories import CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES
from visionlab.data.io import IMAGE_SUFFIXES, DataError, PathLike

KINDS = ("synthetic", "cityscapes", "camvid", "folder")
SPLITS = ("train", "val", "test")
ACCEPTED_FORMS = (
    "synthetic | cityscapes:DIR | camvid:DIR | folder:DIR | path/to/dataset.yaml | "
    "an existing DIR holding leftImg8bit/ (Cityscapes), trainannot/, valannot/ or testannot/ (CamVid), "
    "or images/ + masks/ (folder)"
)
_MAX_NAMED = 5  # how many offending files an error message lists before "... and N more"

# Official cityscapesScripts labels.py: labelId -> category id (the table's "categoryId" column).
_CITYSCAPES_TABLE: tuple[tuple[int, int], ...] = (
    (0, 0),   # unlabeled
    (1, 0),   # ego vehicle
    (2, 0),   # rectification border
    (3, 0),   # out of roi
    (4, 0),   # static
    (5, 0),   # dynamic
    (6, 0),   # ground
    (7, 1),   # road
    (8, 1),   # sidewalk
    (9, 1),   # parking
    (10, 1),  # rail track
    (11, 2),  # building
    (12, 2),  # wall
    (13, 2),  # fence
    (14, 2),  # guard rail
    (15, 2),  # bridge
    (16, 2),  # tunnel
    (17, 3),  # pole
    (18, 3),  # polegroup
    (19, 3),  # traffic light
    (20, 3),  # traffic sign
    (21, 4),  # vegetation
    (22, 4),  # terrain
    (23, 5),  # sky
    (24, 6),  # person
    (25, 6),  # rider
    (26, 7),  # car
    (27, 7),  # truck
    (28, 7),  # bus
    (29, 7),  # caravan
    (30, 7),  # trailer
    (31, 7),  # train
    (32, 7),  # motorcycle
    (33, 7),  # bicycle
    # license plate (-1) never appears in *_labelIds.png files.
)

# SegNet 11-class CamVid ids -> categories (see shared/data/camvid/SOURCE.md).
_CAMVID_TABLE: tuple[tuple[int, int], ...] = (
    (0, 5),              # Sky -> sky
    (1, 2),              # Building -> construction
    (2, 3),              # Pole -> object
    (3, 1),              # Road -> flat
    (4, 1),              # Pavement/Sidewalk -> flat
    (5, 4),              # Tree -> nature
    (6, 3),              # SignSymbol -> object
    (7, 2),              # Fence -> construction
    (8, 7),              # Car -> vehicle
    (9, 6),              # Pedestrian -> human
    (10, 6),             # Bicyclist -> human (rider + bike merged in CamVid)
    (11, IGNORE_INDEX),  # Unlabelled/void: SegNet's ignore_label
)


def _make_lut(table: Any) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, cat in table:
        lut[raw] = cat
    lut.flags.writeable = False  # shared module constant
    return lut


CITYSCAPES_LUT = _make_lut(_CITYSCAPES_TABLE)
CAMVID_LUT = _make_lut(_CAMVID_TABLE)
CATEGORY_LUT = _make_lut([(i, i) for i in range(NUM_CATEGORIES)])  # masks already in categories
_CITYSCAPES_IDS = frozenset(r for r, _ in _CITYSCAPES_TABLE)
_CAMVID_IDS = frozenset(r for r, _ in _CAMVID_TABLE)
_CATEGORY_IDS = frozenset(range(NUM_CATEGORIES)) | {IGNORE_INDEX}


@dataclass(frozen=True, eq=False)  # eq=False: identity hash/eq, an ndarray field can't be compared
class DataSpec:
    kind: str                             # "synthetic" | "cityscapes" | "camvid" | "folder"
    root: Path | None                     # None for synthetic
    lut: np.ndarray                       # uint8[256]: raw id -> category 0..7 or IGNORE_INDEX
    valid_ids: frozenset[int]             # raw ids the format defines; others are "unknown"
    # split -> (image dir, label dir), both relative to root
    splits: dict[str, tuple[str, str]] = field(default_factory=dict)
    name: str = ""                        # short dataset name for reports


@dataclass
class SplitScan:
    """Everything found in one split, unpaired files included (list_pairs raises on those)."""

    split: str
    image_dir: Path
    label_dir: Path
    pairs: list[tuple[Path, Path]]
    unpaired_images: list[Path]
    unpaired_labels: list[Path]
    other_files: list[Path]  # non-image files in the split dirs (README.txt, ...), listed not read


# ----------------------------------------------------------------------------- parsing specs


def _require_dir(spec: str, root: Path) -> Path:
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"data={spec}: directory {root} {what}", "missing")
    return root


def _cityscapes_spec(spec: str, root: Path, name: str | None = None) -> DataSpec:
    if not (root / "leftImg8bit").is_dir():
        raise DataError(
            f"data={spec}: {root} has no leftImg8bit/ directory "
            "(expected Cityscapes leftImg8bit/<split>/<city>/ + gtFine/<split>/<city>/)"
        )
    splits = {s: (f"leftImg8bit/{s}", f"gtFine/{s}") for s in SPLITS if (root / "leftImg8bit" / s).is_dir()}
    return DataSpec("cityscapes", root, CITYSCAPES_LUT, _CITYSCAPES_IDS, splits, name or "cityscapes")


def _camvid_spec(spec: str, root: Path, name: str | None = None) -> DataSpec:
    splits = {s: (s, f"{s}annot") for s in SPLITS if (root / s).is_dir() or (root / f"{s}annot").is_dir()}
    if not splits:
        raise DataError(
            f"data={spec}: no CamVid split in {root} "
            "(expected train/ + trainannot/, val/ + valannot/ or test/ + testannot/)"
        )
    return DataSpec("camvid", root, CAMVID_LUT, _CAMVID_IDS, splits, name or "camvid")


def _mapping_lut(mapping: Any, ignore: Any, where: str) -> tuple[np.ndarray, frozenset[int]]:
    """``mapping: {raw_id: category}`` + ``ignore: [ids]`` (labels.yaml, dataset YAML) -> (lut, valid ids)."""
    mapping = {} if mapping is None else mapping
    ignore = [] if ignore is None else ignore
    if not isinstance(mapping, dict):
        raise DataError(f"{where}: 'mapping' must be a dict raw_id -> category, got {type(mapping).__name__}")
    if not isinstance(ignore, list):
        raise DataError(f"{where}: 'ignore' must be a list of raw ids, got {type(ignore).__name__}")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)

    def raw_id(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise DataError(f"{where}: raw label id {value!r} invalid; expected an integer 0..255")
        return value

    for key, cat in mapping.items():
        rid = raw_id(key)
        if isinstance(cat, str) and cat in CATEGORY_NAMES:
            lut[rid] = CATEGORY_NAMES.index(cat)
        elif isinstance(cat, str) and cat == "ignore":
            lut[rid] = IGNORE_INDEX
        elif type(cat) is int and (0 <= cat < NUM_CATEGORIES or cat == IGNORE_INDEX):
            lut[rid] = cat
        else:
            raise DataError(
                f"{where}: mapping {key}: {cat!r} invalid; expected a category name "
                f"({', '.join(CATEGORY_NAMES)}, ignore) or id 0..{NUM_CATEGORIES - 1} / {IGNORE_INDEX}"
            )
    ignored = {raw_id(v) for v in ignore}
    both = sorted(ignored & set(mapping))
    if both:
        raise DataError(f"{where}: ids {both} are both in 'mapping' and 'ignore'; expected each in one")
    lut[list(ignored)] = IGNORE_INDEX
    valid = frozenset(mapping) | frozenset(ignored)
    if not valid:
        raise DataError(f"{where}: empty 'mapping' and 'ignore'; expected at least one raw id")
    lut.flags.writeable = False
    return lut, valid


def _load_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})", "unreadable") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid YAML in {what} ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: {what} must be a YAML mapping (key: value), got {type(data).__name__}")
    return data


def _folder_spec(spec: str, root: Path, name: str | None = None) -> DataSpec:
    if not (root / "images").is_dir():
        raise DataError(f"data={spec}: {root} has no images/ directory (expected images/<split>/ + masks/<split>/)")
    labels_yaml = root / "labels.yaml"
    if labels_yaml.is_file():
        cfg = _load_yaml(labels_yaml, "label mapping")
        unknown = sorted(set(cfg) - {"mapping", "ignore"})
        if unknown:
            raise DataError(f"{labels_yaml}: unknown keys {unknown}; expected only 'mapping' and 'ignore'")
        lut, valid = _mapping_lut(cfg.get("mapping"), cfg.get("ignore"), str(labels_yaml))
    else:  # masks must already hold category ids
        lut, valid = CATEGORY_LUT, _CATEGORY_IDS
    dirs = [d.name for d in sorted((root / "images").iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not dirs:
        raise DataError(f"data={spec}: {root / 'images'} has no split subdirectories (expected images/train/, ...)")
    splits = {d: (f"images/{d}", f"masks/{d}") for d in dirs}
    return DataSpec("folder", root, lut, valid, splits, name or root.resolve().name)


_LOADERS = {"cityscapes": _cityscapes_spec, "camvid": _camvid_spec, "folder": _folder_spec}
_FORMAT_LUTS = {
    "cityscapes": (CITYSCAPES_LUT, _CITYSCAPES_IDS),
    "camvid": (CAMVID_LUT, _CAMVID_IDS),
    "folder": (CATEGORY_LUT, _CATEGORY_IDS),
}
_YAML_KEYS = {"path", "format", "name", "train", "val", "test", "masks", "mapping", "ignore"}


def _yaml_spec(yaml_path: Path) -> DataSpec:
    cfg = _load_yaml(yaml_path, "dataset YAML")
    unknown = sorted(set(map(str, cfg)) - _YAML_KEYS)
    if unknown:
        raise DataError(f"{yaml_path}: unknown keys {unknown}; expected keys among {sorted(_YAML_KEYS)}")
    fmt = cfg.get("format", "folder")
    if fmt not in ("cityscapes", "camvid", "folder"):
        raise DataError(f"{yaml_path}: format {fmt!r} invalid; expected cityscapes, camvid or folder")
    root = Path(str(cfg.get("path", ".")))
    root = root if root.is_absolute() else yaml_path.parent / root  # relative to the YAML file
    spec_str = str(yaml_path)
    _require_dir(spec_str, root)
    name = str(cfg.get("name") or yaml_path.stem)
    split_keys = [s for s in SPLITS if s in cfg]

    if split_keys:
        masks = cfg.get("masks")
        if masks is not None and not isinstance(masks, (str, dict)):
            raise DataError(f"{yaml_path}: 'masks' must be a directory or a dict split -> directory")
        splits: dict[str, tuple[str, str]] = {}
        for s in split_keys:
            img_dir = cfg[s]
            if not isinstance(img_dir, str):
                raise DataError(f"{yaml_path}: '{s}' must be an image directory relative to {root}, got {img_dir!r}")
            if isinstance(masks, dict):
                if s not in masks:
                    raise DataError(f"{yaml_path}: 'masks' has no entry for split '{s}'")
                lbl_dir = str(masks[s])
            elif isinstance(masks, str):
                lbl_dir = f"{masks}/{s}"
            else:  # Ultralytics-style: replace the 'images' path component by 'masks'
                parts = Path(img_dir).parts
                if "images" not in parts:
                    raise DataError(
                        f"{yaml_path}: cannot derive the mask dir of '{s}: {img_dir}' (no 'images' path "
                        "component); expected a 'masks:' entry"
                    )
                lbl_dir = str(Path(*["masks" if p == "images" else p for p in parts]))
            splits[s] = (img_dir, lbl_dir)
        lut, valid = _FORMAT_LUTS[fmt]
        base = DataSpec(fmt, root, lut, valid, splits, name)
    else:
        base = _LOADERS[fmt](spec_str, root, name)
    if "mapping" in cfg or "ignore" in cfg:
        lut, valid = _mapping_lut(cfg.get("mapping"), cfg.get("ignore"), str(yaml_path))
        base = DataSpec(base.kind, base.root, lut, valid, base.splits, base.name)
    return base


def parse_data_spec(spec: str) -> DataSpec:
    """Parse a ``data=`` value: synthetic, KIND:DIR, a dataset YAML, or an auto-detected DIR."""
    spec = str(spec).strip()
    if spec == "synthetic":
        return DataSpec("synthetic", None, CATEGORY_LUT, _CATEGORY_IDS, {}, "synthetic")
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("cityscapes", "camvid", "folder"):
        if not rest:
            raise DataError(f"data={spec}: missing directory after '{kind}:'; expected {kind}:DIR")
        root = _require_dir(spec, Path(rest).expanduser())
        return _LOADERS[kind](spec, root)
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"data={spec}: dataset YAML {path} does not exist", "missing")
        return _yaml_spec(path)
    if path.is_dir():
        if (path / "leftImg8bit").is_dir():
            return _cityscapes_spec(spec, path)
        if any((path / f"{split}annot").is_dir() for split in SPLITS):
            return _camvid_spec(spec, path)
        if (path / "images").is_dir() and (path / "masks").is_dir():
            return _folder_spec(spec, path)
        raise DataError(f"data={spec}: cannot tell the layout of directory {path}; accepted forms: {ACCEPTED_FORMS}")
    if sep and kind not in ("", *KINDS) and len(kind) > 1:
        raise DataError(f"data={spec}: unknown dataset kind '{kind}'; accepted forms: {ACCEPTED_FORMS}")
    raise DataError(f"data={spec}: {path} does not exist; accepted forms: {ACCEPTED_FORMS}", "missing")


# ----------------------------------------------------------------------------- listing pairs


def _files(directory: Path) -> list[Path]:
    """All non-hidden files under ``directory`` (recursive, sorted)."""
    files = (p for p in directory.rglob("*") if p.is_file())
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(directory).parts))


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def scan_split(spec: DataSpec, split: str) -> SplitScan:
    """Find the (image, label) pairs of a split plus everything that does not pair up."""
    if spec.kind == "synthetic" or spec.root is None:
        raise DataError("data=synthetic: generated on the fly, it has no files to list")
    if split not in spec.splits:
        existing = ", ".join(spec.splits) or "none"
        guess = spec.root / {"cityscapes": f"leftImg8bit/{split}", "folder": f"images/{split}"}.get(spec.kind, split)
        raise DataError(f"{guess}: split '{split}' not found (existing splits of {spec.name}: {existing})", "missing")
    image_dir, label_dir = (spec.root / d for d in spec.splits[split])
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image directory of split '{split}' does not exist", "missing")
    other: list[Path] = []
    images: dict[Path, Path] = {}  # label path the image expects -> image
    for p in _files(image_dir):
        rel = p.relative_to(image_dir)
        if spec.kind == "cityscapes":
            if not p.name.endswith("_leftImg8bit.png"):
                other.append(p)
                continue
            images[label_dir / rel.parent / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")] = p
        elif _is_image(p):
            lbl = label_dir / rel.with_suffix(".png")  # labels are always lossless PNG
            if lbl in images:
                raise DataError(f"{p}: shares its label {lbl} with {images[lbl]}; expected one image per stem")
            images[lbl] = p
        else:
            other.append(p)
    labels: set[Path] = set()
    if label_dir.is_dir():
        for p in _files(label_dir):
            if spec.kind == "cityscapes":
                if p.name.endswith("_gtFine_labelIds.png"):
                    labels.add(p)
                # other gtFine products (_color, _instanceIds, _labelTrainIds, _polygons.json): expected
            elif p.suffix.lower() == ".png":
                labels.add(p)
            else:
                other.append(p)
    pairs = [(img, lbl) for lbl, img in images.items() if lbl in labels]
    pairs.sort()
    unpaired_images = sorted(img for lbl, img in images.items() if lbl not in labels)
    unpaired_labels = sorted(labels - set(images))
    return SplitScan(split, image_dir, label_dir, pairs, unpaired_images, unpaired_labels, sorted(other))


def _some(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_MAX_NAMED])
    return shown + (f" ... and {len(paths) - _MAX_NAMED} more" if len(paths) > _MAX_NAMED else "")


def list_pairs(spec: DataSpec, split: str) -> list[tuple[Path, Path]]:
    """Sorted (image, label) pairs of a split; DataError if missing, empty, or anything is unpaired."""
    scan = scan_split(spec, split)
    if not scan.label_dir.is_dir():
        msg = f"label directory of split '{split}' does not exist (images are in {scan.image_dir})"
        raise DataError(f"{scan.label_dir}: {msg}", "missing")
    if not scan.pairs and not scan.unpaired_images:
        wanted = "*_leftImg8bit.png" if spec.kind == "cityscapes" else ", ".join(IMAGE_SUFFIXES)
        raise DataError(f"{scan.image_dir}: no images in split '{split}' (expected {wanted} files)", "missing")
    hint = f"run `visionlab data check {spec.root}` for the full list"
    if scan.unpaired_images:
        raise DataError(
            f"{scan.image_dir}: {len(scan.unpaired_images)} image(s) without a label in {scan.label_dir}: "
            f"{_some(scan.unpaired_images)}; {hint}",
            "unpaired_image",
        )
    if scan.unpaired_labels:
        raise DataError(
            f"{scan.label_dir}: {len(scan.unpaired_labels)} label(s) without an image in {scan.image_dir}: "
            f"{_some(scan.unpaired_labels)}; {hint}",
            "unpaired_label",
        )
    return scan.pairs


# ----------------------------------------------------------------------------- mapping labels


def valid_id_mask(spec: DataSpec) -> np.ndarray:
    """bool[256]: True for raw ids the spec defines."""
    mask = np.zeros(256, dtype=bool)
    mask[list(spec.valid_ids)] = True
    return mask


def unknown_ids(raw: np.ndarray, spec: DataSpec) -> list[int]:
    """Sorted raw ids present in ``raw`` that the spec does not define (one bincount, no pixel loop)."""
    present = np.bincount(np.asarray(raw, dtype=np.uint8).ravel(), minlength=256) > 0
    return np.flatnonzero(present & ~valid_id_mask(spec)).tolist()


def describe_ids(spec: DataSpec) -> str:
    ids = sorted(spec.valid_ids)
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids))


def map_label(raw: np.ndarray, spec: DataSpec, path: PathLike) -> np.ndarray:
    """Raw label ids -> category ids (uint8, IGNORE_INDEX for ignored); DataError on unknown ids."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise DataError(f"{path}: label array has dtype {raw.dtype}; expected uint8 raw ids (use read_label)")
    bad = unknown_ids(raw, spec)
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        defined = f"{spec.name} ({spec.kind}) defines ids {describe_ids(spec)}"
        raise DataError(f"{path}: unknown label ids [{shown}]; {defined}", "unknown_label_ids")
    return spec.lut[raw]
