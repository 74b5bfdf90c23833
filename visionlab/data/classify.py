"""Classification data in RAM: whole splits as uint8 tensors, batched augmentation, a tensor loader.

Why not a torch DataLoader: CIFAR/MNIST-sized images are so small that per-sample Python (dataset
__getitem__, collate, worker pickling) costs more than the model's forward pass on CPU. A split is decoded
once (``load_split``, see classify_formats.py) and every batch is a tensor gather plus a few vectorised ops
on the training device (the approach of airbench's CifarLoader).

- ``parse_classify_data``, ``load_split`` / ``load_splits``: read a dataset (``data=`` forms and readers in
  classify_formats.py).
- ``holdout``, ``fraction_subset``: seeded, class-stratified partitions.
- ``BatchAugment``: per-sample flip, reflect-pad translate and cutout on a whole batch.
- ``TensorLoader``: shuffled batches ``{"image", "target", "index"}``, per-epoch reseeding, rank shards.
- ``bench``: images/s of TensorLoader + BatchAugment.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from visionlab.data.classify_formats import (  # noqa: F401  (re-exported: the public API lives here)
    ACCEPTED_FORMS,
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    KINDS,
    MNIST_CLASSES,
    ClassifySource,
    ClassifySplit,
    find_cifar100_dir,
    find_cifar10_dir,
    has_split_folders,
    find_idx_dir,
    available_splits,
    cache_dir,
    load_cifar_split,
    load_idx_split,
    load_image_folder_split,
    read_idx,
    write_idx,
)
from visionlab.data.io import DataError

# ----------------------------------------------------------------------------- data= and loading


def parse_classify_data(spec: str) -> ClassifySource:
    """Parse a ``data=`` value for classification (forms: classify_formats.py docstring); DataError if unusable."""
    spec = str(spec).strip()
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise DataError(f"data={spec}: missing path after '{kind}:'; expected {kind}:DIR")
        path = Path(rest).expanduser()
        if not path.exists():
            raise DataError(f"data={spec}: {path} does not exist", "missing")
        if kind == "zip":
            if not zipfile.is_zipfile(path):
                raise DataError(f"data={spec}: {path} is not a zip archive")
            return ClassifySource("zip", path, spec)
        if not path.is_dir():
            raise DataError(f"data={spec}: {path} is not a directory; expected {kind}:DIR")
        if kind == "cifar10":
            found = find_cifar10_dir(path)
            if found is None and has_split_folders(path):
                return ClassifySource("folder", path, spec)  # the JPEG re-encoding: train.zip / test.zip
            if found is None:
                raise DataError(f"data={spec}: no CIFAR-10 python batches (data_batch_1, batches.meta) "
                                f"or <split>/<class>/ image folders in {path}", "missing")
            return ClassifySource(kind, found, spec)
        if kind == "cifar100":
            found = find_cifar100_dir(path)
            if found is None:
                raise DataError(f"data={spec}: no CIFAR-100 python files (train, test, meta) in {path}", "missing")
            return ClassifySource(kind, found, spec)
        if kind in ("mnist", "fashion_mnist"):
            found = find_idx_dir(path)
            if found is None:
                raise DataError(f"data={spec}: no idx files (train-images-idx3-ubyte[.gz], ...) in {path}", "missing")
            return ClassifySource(kind, found, spec)
        return ClassifySource(kind, path, spec)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".zip":
        return ClassifySource("zip", path, spec)
    if path.is_dir():
        for kind, probe in (("cifar10", find_cifar10_dir), ("cifar100", find_cifar100_dir)):
            found = probe(path)
            if found is not None:
                return ClassifySource(kind, found, spec)
        found = find_idx_dir(path)
        if found is not None:  # idx files do not say which dataset they are: the folder name decides
            return ClassifySource("fashion_mnist" if "fashion" in str(path).lower() else "mnist", found, spec)
        if has_split_folders(path):
            return ClassifySource("folder", path, spec)
        raise DataError(f"data={spec}: cannot tell the dataset format of {path}; accepted forms: {ACCEPTED_FORMS}")
    if sep and len(kind) > 1:
        raise DataError(f"data={spec}: unknown dataset kind '{kind}'; accepted forms: {ACCEPTED_FORMS}")
    raise DataError(f"data={spec}: {path} does not exist; accepted forms: {ACCEPTED_FORMS}", "missing")


def load_split(data: str | ClassifySource, split: str, *, classes: list[str] | None = None,
               imgsz: int | tuple[int, int] | None = None, cache: bool = True, cache_root: str | Path | None = None,
               workers: int | None = None) -> ClassifySplit:
    """Load one split of a classification dataset into RAM.

    ``classes``: the training split's classes; a later split with a class folder outside it is refused.
    ``imgsz``: resize folder images to this size (int or (h, w)); without it they must all share one size.
    ``cache``/``cache_root``: cache decoded image folders (default root ``cache_dir()``).
    ``workers``: file-reading/decoding threads (default: CPU count, at most 8). Decoding tiny JPEGs is mostly
    Python-level PIL work under the GIL, so threads mainly overlap file reads (measured on 2 loaded cores:
    CIFAR-10 test.zip, 10k JPEGs, 2.7 s with 1 thread, ~3 s with 2; train + test 25 s, cached 2 s)."""
    source = data if isinstance(data, ClassifySource) else parse_classify_data(data)
    if source.kind in ("cifar10", "cifar100", "mnist", "fashion_mnist"):
        if split not in available_splits(source):
            raise DataError(f"data={source.spec}: no split '{split}'; available: "
                            f"{', '.join(available_splits(source))} (carve a val split with holdout())", "missing")
        out = load_cifar_split(source, split) if source.kind.startswith("cifar") else load_idx_split(source, split)
        if classes is not None and list(classes) != out.classes:
            raise DataError(f"data={source.spec}: split '{split}' classes {out.classes[:4]}... differ from the "
                            f"training classes {list(classes)[:4]}...", "bad_label")
        return out
    size = (imgsz, imgsz) if isinstance(imgsz, int) else (tuple(imgsz) if imgsz is not None else None)
    n_workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    return load_image_folder_split(source, split, list(classes) if classes is not None else None, size, cache,
                                   Path(cache_root) if cache_root is not None else None, n_workers)


def load_splits(data: str, splits: tuple[str, ...] = ("train", "test"), **kwargs) -> dict[str, ClassifySplit]:
    """Load several splits; the first one defines the classes every later split must stay within.
    ``kwargs`` go to ``load_split`` (imgsz, cache, cache_root, workers)."""
    source = parse_classify_data(data)
    out: dict[str, ClassifySplit] = {}
    classes = None
    for split in splits:
        out[split] = load_split(source, split, classes=classes, **kwargs)
        classes = out[split].classes
    return out


# ----------------------------------------------------------------------------- seeded partitions


def _stratified_mask(labels: torch.Tensor, fraction: float, seed: int) -> np.ndarray:
    """True for round(fraction * n_c) randomly chosen samples of every class c (at least one when the
    class has samples and fraction > 0). Deterministic for a seed; vectorised (no loop over samples)."""
    y = labels.cpu().numpy()
    perm = np.random.default_rng(seed).permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, random order inside a class
    counts = np.bincount(y, minlength=int(y.max()) + 1 if len(y) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    want = np.where(counts > 0, np.maximum(np.rint(counts * fraction), 1 if fraction > 0 else 0), 0)
    rank_in_class = np.arange(len(y)) - starts[y[order]]
    mask = np.zeros(len(y), dtype=bool)
    mask[order[rank_in_class < want[y[order]]]] = True
    return mask


def holdout(split: ClassifySplit, fraction: float, seed: int = 0) -> tuple[ClassifySplit, ClassifySplit]:
    """A deterministic, class-stratified (train, val) partition: ``fraction`` of every class goes to val."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"holdout fraction must be in (0, 1), got {fraction}")
    val = _stratified_mask(split.labels, fraction, seed)
    if val.all():
        raise DataError(f"{split.name}: holdout fraction {fraction} leaves no training samples")
    return (split.subset(np.flatnonzero(~val), f"{split.name} (train part)"),
            split.subset(np.flatnonzero(val), f"{split.name} (val holdout {fraction:g})"))


def fraction_subset(split: ClassifySplit, fraction: float, seed: int = 0) -> ClassifySplit:
    """A seeded subset with ``fraction`` of every class (the class balance is kept); 1.0 returns ``split``."""
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return split
    return split.subset(np.flatnonzero(_stratified_mask(split.labels, fraction, seed)),
                        f"{split.name} (fraction {fraction:g})")


# ----------------------------------------------------------------------------- augmentation


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect out-of-range indices like F.pad(mode='reflect') (edge pixel not repeated)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


class BatchAugment:
    """Random per-sample augmentation of a whole BxCxHxW batch (uint8 or float, any device), in this order:

    - ``flip``: horizontal flip with probability 0.5 (turn off for digits / text: MNIST-like data).
    - ``translate``: shift by up to ``translate`` pixels in x and y, borders filled by reflection: the same
      as reflect-padding by ``translate`` and taking a random crop. Flip and translate are one gather with
      per-sample source indices (no padded copy, no loop over samples or shifts).
    - ``cutout``: zero one random ``cutout`` x ``cutout`` square, fully inside the image (0 = off).

    Random numbers come from a CPU ``torch.Generator`` so a seed gives the same batch on every device.
    """

    def __init__(self, flip: bool = True, translate: int = 4, cutout: int = 0):
        if translate < 0 or cutout < 0:
            raise ValueError(f"translate and cutout must be >= 0, got {translate}, {cutout}")
        self.flip, self.translate, self.cutout = flip, translate, cutout

    def __repr__(self) -> str:
        return f"BatchAugment(flip={self.flip}, translate={self.translate}, cutout={self.cutout})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, c, h, w = images.shape
        dev = images.device
        flip = torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        t = min(self.translate, h - 1, w - 1)  # reflection needs shifts smaller than the image
        shift = torch.randint(-t, t + 1, (b, 2), generator=generator) if t > 0 else torch.zeros(b, 2, dtype=torch.long)
        if self.flip or t > 0:
            # flip and translate as ONE gather: output pixel (y, x) reads source pixel (rows[y], cols[x])
            rows = _reflect(torch.arange(h) + shift[:, :1], h)  # B x H source rows
            cols = _reflect(torch.arange(w) + shift[:, 1:], w)  # B x W source cols (of the flipped image)
            cols = torch.where(flip.view(b, 1), w - 1 - cols, cols)
            src = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).to(dev)
            images = images.reshape(b, c, h * w).gather(2, src.expand(b, c, h * w)).view(b, c, h, w)
        if self.cutout > 0:
            s = min(self.cutout, h, w)
            corner = torch.stack([torch.randint(0, h - s + 1, (b,), generator=generator),
                                  torch.randint(0, w - s + 1, (b,), generator=generator)], 1).to(dev)
            ys = torch.arange(h, device=dev).view(1, h, 1) - corner[:, 0].view(b, 1, 1)
            xs = torch.arange(w, device=dev).view(1, 1, w) - corner[:, 1].view(b, 1, 1)
            square = (ys >= 0) & (ys < s) & (xs >= 0) & (xs < s)
            fresh = self.flip or t > 0  # the gather made a new tensor: fill it in place, else copy first
            images = (images if fresh else images.clone()).masked_fill_(square.unsqueeze(1), 0)
        return images


# ----------------------------------------------------------------------------- loader


class TensorLoader:
    """Batches straight from a split's in-memory tensors: ``{"image": BxCxHxW, "target": int64 B,
    "index": int64 B}`` (index = position in the split).

    The split's tensors are moved to ``device`` once; batches are gathered and augmented there. Images stay
    uint8 (0..255) unless ``dtype`` is given (e.g. torch.float32: values still 0..255, what models expect).
    Epoch ``e`` is seeded with ``seed * 1_000_003 + e`` (``seed`` defaults to ``generator.initial_seed()``
    when a generator is passed, else 0): the same seed replays the same batches, also after a resume.
    ``set_epoch(e)`` chooses the epoch of the next iteration; without it every iteration advances by one.

    Ranks (``rank``, ``world_size``): every rank draws the same permutation and takes the strided share
    ``perm[rank::world_size]``, so shares never overlap. With ``drop_last`` the permutation is first cut to a
    multiple of ``world_size`` (equal batch counts on every rank, as DDP training needs); without it every
    sample is seen exactly once over all ranks (evaluation)."""

    def __init__(self, split: ClassifySplit, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_last: bool = False,
                 augment: BatchAugment | None = None, device: str | torch.device = "cpu", *,
                 seed: int | None = None, rank: int = 0, world_size: int = 1, dtype: torch.dtype | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.dtype = augment, dtype
        self.rank, self.world_size = rank, world_size
        self.seed = seed if seed is not None else (generator.initial_seed() if generator is not None else 0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _share(self, n: int) -> int:
        """How many samples this rank iterates per epoch."""
        if self.drop_last:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        m = self._share(len(self.labels))
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample order for ``epoch`` (int64, on CPU)."""
        n = len(self.labels)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.drop_last:
            order = order[: n - n % self.world_size]
        return order[self.rank:: self.world_size]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.indices(epoch)
        # augmentation stream separate from the order stream (and per rank), seeded the same way
        aug_gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7919 + 1 + self.rank)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            dev_idx = idx.to(self.device, non_blocking=True)
            images = self.images[dev_idx]
            if self.augment is not None:
                images = self.augment(images, aug_gen)
            if self.dtype is not None:
                images = images.to(self.dtype)
            yield {"image": images, "target": self.labels[dev_idx], "index": idx}


def bench(split: ClassifySplit, batch_size: int = 512, augment: BatchAugment | None = None, batches: int = 50,
          device: str | torch.device = "cpu", dtype: torch.dtype | None = torch.float32) -> dict[str, float]:
    """Images/s of TensorLoader (+ ``augment``, default flip + translate 4 + cutout 8) over ``batches`` batches."""
    augment = augment if augment is not None else BatchAugment(flip=True, translate=4, cutout=8)
    loader = TensorLoader(split, batch_size, shuffle=True, drop_last=False, augment=augment, device=device,
                          dtype=dtype)
    seen, done = 0, 0
    start = time.perf_counter()
    while done < batches:
        for batch in loader:
            seen += len(batch["target"])
            done += 1
            if done >= batches:
                break
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images_per_s": seen / seconds, "images": float(seen), "seconds": seconds, "batches": float(done)}


__all__ = [
    "BatchAugment", "ClassifySource", "ClassifySplit", "TensorLoader", "available_splits", "bench", "cache_dir",
    "fraction_subset", "holdout", "load_split", "load_splits", "parse_classify_data", "read_idx",
    "write_idx",
    "CIFAR10_CLASSES", "MNIST_CLASSES", "FASHION_MNIST_CLASSES",
]
