"""Classification dataset readers: a split decoded once into RAM, a uint8 NxCxHxW tensor + int64 labels.

``data=`` forms (parsed by ``visionlab.data.classify.parse_classify_data``):

- ``cifar10:DIR`` / ``cifar100:DIR``: the official python batches (``cifar-10-batches-py/`` data_batch_1..5,
  test_batch, batches.meta; ``cifar-100-python/`` train, test, meta, fine labels). DIR may be that folder or
  its parent. Without batches, ``cifar10:DIR`` falls back to the image-folder forms below.
- ``mnist:DIR`` / ``fashion_mnist:DIR``: idx files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
  (also in DIR/raw, DIR/MNIST/raw, DIR/FashionMNIST/raw). Grayscale stays 1 channel.
- ``folder:DIR``: ``DIR/<split>/<class>/*.png|jpg|...`` and/or ``DIR/<split>.zip`` holding
  ``<split>/<class>/*`` (or ``<class>/*``), e.g. shared/data/cifar10 (train.zip, test.zip).
- ``zip:FILE`` or ``FILE.zip``: one archive holding ``<split>/<class>/*`` (optionally under one top folder).
- A bare DIR is auto-detected in that order.

Class order is stable: the official order for CIFAR/MNIST, sorted folder names otherwise (for the CIFAR-10
JPEG folders that is the standard airplane..truck). Image folders are decoded with PIL
(``read_image_bytes``) in a thread pool; a corrupt image is named in ``split.skipped`` and left out. The
decoded split is cached as an uncompressed ``.npz`` under ``$VISIONLAB_CACHE`` (default
``~/.cache/visionlab``) keyed by path + size + mtime of the source, so a second load takes a fraction of a
second. The pickle/idx formats are plain arrays already and are not cached.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from visionlab.data.io import IMAGE_SUFFIXES, DataError, read_bytes, read_image_bytes

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
KINDS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "folder", "zip")
SPLITS = ("train", "val", "test")
ACCEPTED_FORMS = (
    "cifar10:DIR | cifar100:DIR | mnist:DIR | fashion_mnist:DIR | folder:DIR | zip:FILE | FILE.zip | "
    "an existing DIR holding CIFAR python batches, MNIST idx files, <split>/<class>/ folders or <split>.zip"
)
_CACHE_VERSION = 1  # bump when the cached arrays change meaning
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049  # 0x00000803 (ubyte, 3 dims), 0x00000801 (ubyte, 1 dim)
_CHUNK = 512  # images per thread-pool task: amortises scheduling over many tiny JPEGs


@dataclass
class ClassifySplit:
    """One split in RAM. ``images`` uint8 NxCxHxW, ``labels`` int64 N (indices into ``classes``),
    ``paths_or_ids`` one name per sample (file path inside the dataset, or the official file name/index),
    ``skipped`` one line per image left out (corrupt/truncated), naming the file and the reason."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths_or_ids: list[str]
    skipped: list[str] = field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, indices: torch.Tensor | np.ndarray | list[int], name: str | None = None) -> ClassifySplit:
        """The samples at ``indices`` (same class list; ``skipped`` kept for reporting)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ClassifySplit(self.images[idx], self.labels[idx], list(self.classes),
                             [self.paths_or_ids[i] for i in idx.tolist()], list(self.skipped),
                             name if name is not None else self.name)


@dataclass(frozen=True)
class ClassifySource:
    """A parsed ``data=`` value: ``kind`` in KINDS, ``root`` the directory (or archive for ``zip``)."""

    kind: str
    root: Path
    spec: str


# ----------------------------------------------------------------------------- recognising formats


def find_cifar10_dir(d: Path) -> Path | None:
    for sub in (d, d / "cifar-10-batches-py"):
        if (sub / "data_batch_1").is_file() and (sub / "batches.meta").is_file():
            return sub
    return None


def find_cifar100_dir(d: Path) -> Path | None:
    for sub in (d, d / "cifar-100-python"):
        if (sub / "meta").is_file() and (sub / "train").is_file():
            return sub
    return None


def find_idx_dir(d: Path) -> Path | None:
    for sub in (d, d / "raw", d / "MNIST" / "raw", d / "FashionMNIST" / "raw"):
        if _find_idx(sub, "train", "images") or _find_idx(sub, "t10k", "images"):
            return sub
    return None


def has_split_folders(d: Path) -> bool:
    return any((d / s).is_dir() or (d / f"{s}.zip").is_file() for s in SPLITS)


def available_splits(source: ClassifySource) -> list[str]:
    """Split names the source holds (in SPLITS order for folders/archives)."""
    if source.kind in ("cifar10", "cifar100"):
        return ["train", "test"]
    if source.kind in ("mnist", "fashion_mnist"):
        return [s for s, p in (("train", "train"), ("test", "t10k")) if _find_idx(source.root, p, "images")]
    if source.kind == "zip":
        return [s for s in SPLITS if _zip_members(source.root, s, whole=True)[0]]
    return [s for s in SPLITS if (source.root / s).is_dir() or (source.root / f"{s}.zip").is_file()]


# ----------------------------------------------------------------------------- CIFAR python batches


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: CIFAR python batch file is missing", "missing")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")  # official format, trusted files (see the brief)
    except Exception as e:  # truncated / not a pickle
        raise DataError(f"{path}: not a readable CIFAR python batch ({type(e).__name__}: {e})", "corrupt") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict (CIFAR python batch), found {type(obj).__name__}", "corrupt")
    return obj


def _cifar_arrays(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    d = _unpickle(path)
    if b"data" not in d or label_key not in d:
        raise DataError(f"{path}: CIFAR batch without '{label_key.decode()}' / 'data' entries", "corrupt")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape} and "
                        f"{len(labels)} labels", "corrupt")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in d.get(b"filenames", [])]
    if len(names) != len(data):
        names = [f"{path.name}:{i}" for i in range(len(data))]
    return data.reshape(-1, 3, 32, 32), labels, names  # rows are R, G, B planes of 32x32


def load_cifar_split(source: ClassifySource, split: str) -> ClassifySplit:
    root = source.root
    if source.kind == "cifar10":
        meta = _unpickle(root / "batches.meta")
        classes = [c.decode() for c in meta.get(b"label_names", [])] or list(CIFAR10_CLASSES)
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
        label_key = b"labels"
    else:
        meta = _unpickle(root / "meta")
        classes = [c.decode() for c in meta.get(b"fine_label_names", [])]
        files, label_key = [root / split], b"fine_labels"
    parts = [_cifar_arrays(f, label_key) for f in files]
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{root}: labels outside 0..{len(classes) - 1} for {len(classes)} class names", "corrupt")
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    return ClassifySplit(images, torch.from_numpy(labels), classes, [n for p in parts for n in p[2]],
                         name=f"{source.spec} {split}")


# ----------------------------------------------------------------------------- MNIST idx files


def _find_idx(d: Path, prefix: str, what: str) -> Path | None:
    dims = "idx3" if what == "images" else "idx1"
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            p = d / f"{prefix}-{what}{sep}{dims}-ubyte{suffix}"
            if p.is_file():
                return p
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (raw or .gz) as a uint8 array; DataError if the magic number or the size is wrong."""
    raw = read_bytes(path)
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip file ({e})", "corrupt") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if found != magic or len(raw) < header:
        raise DataError(f"{path}: idx magic number {found:#010x}, expected {magic:#010x} "
                        f"({'images' if ndim == 3 else 'labels'}, unsigned bytes)", "corrupt")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes) but the file holds "
                        f"{len(raw) - header} bytes of data (truncated?)", "truncated")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` as an idx file of unsigned bytes (gzip-compressed when ``path`` ends in .gz), the format
    ``read_idx`` reads: magic 0x0000 0x08 ndim, the sizes as big-endian int32, then the bytes."""
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def load_idx_split(source: ClassifySource, split: str) -> ClassifySplit:
    prefix = "train" if split == "train" else "t10k"
    img_path, lab_path = _find_idx(source.root, prefix, "images"), _find_idx(source.root, prefix, "labels")
    if img_path is None or lab_path is None:
        raise DataError(f"{source.root}: no {prefix}-images-idx3-ubyte[.gz] / {prefix}-labels-idx1-ubyte[.gz] "
                        f"for split '{split}'", "missing")
    images = read_idx(img_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(lab_path, _IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{img_path}: {len(images)} images but {lab_path.name} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{lab_path}: label {int(labels.max())} outside 0..9")
    classes = list(FASHION_MNIST_CLASSES if source.kind == "fashion_mnist" else MNIST_CLASSES)
    return ClassifySplit(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels), classes,
                         [f"{prefix}:{i}" for i in range(len(labels))], name=f"{source.spec} {split}")


# ----------------------------------------------------------------------------- image folders and zips


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES) and "__MACOSX" not in name


def _zip_members(archive: Path, split: str, whole: bool) -> tuple[list[tuple[str, str]], str]:
    """``[(member, class_name)]`` of the images of ``split`` in ``archive`` plus a fingerprint of the archive.
    ``whole``: the archive holds every split (``[top/]<split>/<class>/file``); otherwise it *is* the split
    (``<split>.zip`` holding ``<split>/<class>/file`` or ``<class>/file``)."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = sorted(n for n in z.namelist() if _is_image(n))  # stable order, whatever the zip order
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{archive}: not a readable zip archive ({e})", "corrupt") from None
    parts = [n.split("/") for n in names]
    if whole and parts and len({p[0] for p in parts}) == 1 and parts[0][0] not in SPLITS \
            and all(len(p) >= 4 for p in parts):
        parts = [p[1:] for p in parts]  # everything under one top folder (e.g. cifar10/train/...)
    out = []
    for name, p in zip(names, parts):
        if whole:
            if p[0] != split:
                continue
            p = p[1:]
        elif len(p) == 3 and p[0] == split:
            p = p[1:]  # train.zip holding train/<class>/file
        if len(p) != 2:
            raise DataError(f"{archive}: member '{name}' is not [{split}/]<class>/<image>; expected class folders")
        out.append((name, p[0]))
    return out, _fingerprint([archive])


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha1(f"v{_CACHE_VERSION}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _folder_items(split_dir: Path) -> list[tuple[Path, str]]:
    items = []
    for f in sorted(split_dir.rglob("*")):
        if not f.is_file() or not _is_image(f.name):
            continue
        rel = f.relative_to(split_dir).parts
        if len(rel) != 2:
            raise DataError(f"{f}: expected images in {split_dir}/<class>/, found one at depth {len(rel)}")
        items.append((f, rel[0]))
    return items


def cache_dir() -> Path:
    """Where decoded splits are cached: ``$VISIONLAB_CACHE`` or ``~/.cache/visionlab``."""
    return Path(os.environ.get("VISIONLAB_CACHE") or Path.home() / ".cache" / "visionlab")


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    shrink = image.shape[0] > h and image.shape[1] > w  # INTER_AREA when shrinking: no aliasing
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _decode_all(names: list[str], read: Callable[[int], bytes], imgsz: tuple[int, int] | None,
                workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every image into one NxHxWx3 array. Returns (images, kept mask, skipped messages)."""
    skipped: list[str] = []
    size = imgsz
    if size is None:  # the first readable image fixes the size (deterministic: sorted order)
        for i in range(len(names)):
            try:
                size = read_image_bytes(names[i], read(i)).shape[:2]
                break
            except DataError:
                continue
    if size is None:
        raise DataError(f"{names[0] if names else '(no images)'}...: none of the {len(names)} images is readable",
                        "corrupt")
    out = np.zeros((len(names), size[0], size[1], 3), dtype=np.uint8)
    ok = np.zeros(len(names), dtype=bool)

    def work(start: int) -> list[str]:
        errors = []
        for i in range(start, min(start + _CHUNK, len(names))):
            try:
                img = read_image_bytes(names[i], read(i))
            except DataError as e:
                errors.append(str(e))
                continue
            if img.shape[:2] != size:
                if imgsz is None:
                    raise DataError(f"{names[i]}: image is {img.shape[0]}x{img.shape[1]}, others are "
                                    f"{size[0]}x{size[1]}; pass imgsz to resize every image on load")
                img = _resize(img, size)
            out[i], ok[i] = img, True
        return errors

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for errors in pool.map(work, range(0, len(names), _CHUNK)):
            skipped.extend(errors)
    return out, ok, skipped


def load_image_folder_split(source: ClassifySource, split: str, classes: list[str] | None,
                            imgsz: tuple[int, int] | None, use_cache: bool, cache_root: Path | None,
                            workers: int) -> ClassifySplit:
    split_dir, split_zip = source.root / split, source.root / f"{split}.zip"
    if source.kind == "zip" or not split_dir.is_dir() and split_zip.is_file():
        archive = source.root if source.kind == "zip" else split_zip
        members, key = _zip_members(archive, split, whole=source.kind == "zip")
        names = [m for m, _ in members]
        ids = names
        display = [f"{archive}/{m}" for m in names]
        folder_classes = sorted({c for _, c in members})
    elif split_dir.is_dir():
        archive = None
        items = _folder_items(split_dir)
        names = [str(p) for p, _ in items]
        ids = [str(p.relative_to(source.root)) for p, _ in items]
        display = names
        members = [(n, c) for n, (_, c) in zip(names, items)]
        key = _fingerprint([p for p, _ in items]) if items else "empty"
        folder_classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    else:
        raise DataError(f"data={source.spec}: no split '{split}' ({split_dir} or {split_zip}); available: "
                        f"{', '.join(available_splits(source)) or 'none'}", "missing")
    if not members:
        raise DataError(f"data={source.spec}: split '{split}' holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        f"splits with images: {', '.join(available_splits(source)) or 'none'}", "missing")
    if classes is None:
        classes = folder_classes
    unknown = sorted(set(c for _, c in members) - set(classes))
    if unknown:
        raise DataError(f"data={source.spec}: split '{split}' has class folder(s) {', '.join(unknown[:5])} that the "
                        f"training classes do not have (known: {', '.join(classes[:10])}"
                        f"{', ...' if len(classes) > 10 else ''})", "bad_label")
    class_index = {c: i for i, c in enumerate(classes)}
    labels = np.array([class_index[c] for _, c in members], dtype=np.int64)

    cache_file = None
    if use_cache:
        tag = hashlib.sha1(f"{key}|{split}|{imgsz}|{'/'.join(classes)}".encode()).hexdigest()[:16]
        stem = "".join(ch if ch.isalnum() else "_" for ch in source.root.name)[:40]
        cache_file = (cache_root or cache_dir()) / "classify" / f"{stem}-{split}-{tag}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as z:
                    return ClassifySplit(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), classes,
                                         z["ids"].tolist(), z["skipped"].tolist(), f"{source.spec} {split}")
            except (OSError, ValueError, KeyError, EOFError):
                pass  # unreadable cache (interrupted write of an older version): decode again

    if archive is not None:
        with zipfile.ZipFile(archive) as z:  # read sequentially (ZipFile is not made for parallel reads)
            blobs = [z.read(n) for n in names]
        read = blobs.__getitem__
    else:
        read = lambda i: read_bytes(names[i])  # noqa: E731  (file reads happen inside the pool)
    images, ok, skipped = _decode_all(display, read, imgsz, workers)
    if not ok.any():
        raise DataError(f"data={source.spec}: none of the {len(names)} images of split '{split}' is readable; "
                        f"first error: {skipped[0] if skipped else '?'}", "corrupt")
    keep = np.flatnonzero(ok)
    images = np.ascontiguousarray(images[keep].transpose(0, 3, 1, 2))
    labels, ids = labels[keep], [ids[i] for i in keep]
    if cache_file is not None:
        from visionlab.utils.files import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append '.npz' to the name
                np.savez(f, images=images, labels=labels, ids=np.array(ids, dtype=str),
                         skipped=np.array(skipped, dtype=str))

        try:
            atomic_write(cache_file, write)
        except OSError:
            pass  # a read-only home is no reason to fail: the next run decodes again
    return ClassifySplit(torch.from_numpy(images), torch.from_numpy(labels), list(classes), ids, skipped,
                         f"{source.spec} {split}")
