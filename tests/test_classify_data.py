"""Classification data: formats (CIFAR pickles, idx, folders, zips), cache, partitions, augmentation, loader."""

from __future__ import annotations

import gzip
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import png, shared_path

from visionlab.data.classify import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    BatchAugment,
    TensorLoader,
    bench,
    fraction_subset,
    holdout,
    load_split,
    load_splits,
    parse_classify_data,
    read_idx,
    write_idx,
)
from visionlab.data.io import DataError

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread avoids OpenMP spin contention (measured
    3-10x faster here under load); restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# ----------------------------------------------------------------------------- generators (official formats)


def _cifar_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes = b"labels") -> None:
    d = {b"batch_label": b"testing batch", label_key: labels, b"data": data,
         b"filenames": [f"img_{path.name}_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)  # the official files are Python 2 pickles with bytes keys


def make_cifar10(root: Path, per_batch: int = 4, label_names: list[str] | None = None) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _cifar_batch(d / name, rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                     [int(v) for v in rng.integers(0, 10, per_batch)])
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in (label_names or CIFAR10_CLASSES)],
                     b"num_vis": 3072}, f, protocol=2)
    return d


def make_idx(root: Path, n: int = 6, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 251
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", np.arange(n) % 10)
    return root


def _solid(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def make_folders(root: Path, classes: tuple[str, ...] = ("zebra", "apple", "mango"), per_class: int = 3,
                 split: str = "train") -> Path:
    for ci, c in enumerate(classes):
        for i in range(per_class):
            png(root / split / c / f"{i}.png", _solid(10 * ci + i))
    return root


def _zip_tree(zip_path: Path, root: Path, under: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as z:
        for f in sorted(under.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root).as_posix())
    return zip_path


# ----------------------------------------------------------------------------- formats


def test_cifar10_python_batches(tmp_path: Path) -> None:
    d = make_cifar10(tmp_path)
    train = load_split(f"cifar10:{tmp_path}", "train")
    test = load_split(str(tmp_path), "test")  # auto-detected
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 32, 32) and train.labels.dtype == torch.int64
    assert train.classes == list(CIFAR10_CLASSES)
    raw = pickle.load(open(d / "data_batch_2", "rb"), encoding="bytes")
    # sample 5 = 2nd batch, row 1: R plane first, then G, then B (row-major 32x32 each)
    assert train.images[5, 0, 0, 0] == raw[b"data"][1, 0]
    assert train.images[5, 1, 0, 0] == raw[b"data"][1, 1024]
    assert train.images[5, 2, 31, 31] == raw[b"data"][1, 3071]
    assert train.labels[5] == raw[b"labels"][1]
    assert train.paths_or_ids[5] == "img_data_batch_2_1.png"
    with pytest.raises(DataError, match="no split 'val'.*holdout"):
        load_split(f"cifar10:{tmp_path}", "val")


def test_cifar_class_order_is_the_file_order(tmp_path: Path) -> None:
    names = list(reversed(CIFAR10_CLASSES))  # not sorted: must not be re-sorted
    make_cifar10(tmp_path, label_names=names)
    assert load_split(f"cifar10:{tmp_path}", "test").classes == names


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.zeros((3, 3072), dtype=np.uint8)
    data[:, 1024] = [7, 8, 9]
    for split in ("train", "test"):
        with open(d / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": [99, 0, 42], b"coarse_labels": [1, 2, 3],
                         b"filenames": [b"a", b"b", b"c"]}, f, protocol=2)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, f, protocol=2)
    split = load_split(f"cifar100:{tmp_path}", "train")
    assert split.labels.tolist() == [99, 0, 42] and len(split.classes) == 100 and split.classes[42] == "c42"
    assert split.images[:, 1, 0, 0].tolist() == [7, 8, 9]


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path: Path, gz: bool) -> None:
    make_idx(tmp_path / "mnist", gz=gz)
    split = load_split(f"mnist:{tmp_path / 'mnist'}", "train")
    assert split.images.shape == (6, 1, 28, 28)  # grey stays one channel
    assert split.images[1, 0, 0, 3] == (784 + 3) % 251
    assert split.labels.tolist() == [0, 1, 2, 3, 4, 5] and split.classes[3] == "3"
    test = load_split(str(tmp_path / "mnist"), "test")
    assert len(test) == 6


def test_fashion_mnist_names_and_autodetect(tmp_path: Path) -> None:
    make_idx(tmp_path / "fashion" / "raw")
    split = load_split(str(tmp_path / "fashion"), "train")
    assert split.classes == list(FASHION_MNIST_CLASSES) and split.classes[9] == "Ankle boot"
    assert load_split(f"fashion_mnist:{tmp_path / 'fashion'}", "test").classes[0] == "T-shirt/top"


def test_idx_bad_magic_and_truncation(tmp_path: Path) -> None:
    root = make_idx(tmp_path / "m", gz=False)
    bad = root / "train-images-idx3-ubyte"
    raw = bad.read_bytes()
    bad.write_bytes((2049).to_bytes(4, "big") + raw[4:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: idx magic number 0x00000801, expected 0x00000803"):
        load_split(f"mnist:{root}", "train")
    bad.write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_split(f"mnist:{root}", "train")


def test_folder_sorted_classes_and_unknown_class_refused(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "ds")
    make_folders(root, classes=("apple", "mango"), per_class=1, split="test")
    splits = load_splits(str(root), ("train", "test"), cache=False)
    assert splits["train"].classes == ["apple", "mango", "zebra"]  # sorted folder names
    # pixel value 10 * (position in the *given* class tuple) + i: zebra was written first (0..2)
    by_label = {c: sorted(splits["train"].images[splits["train"].labels == i][:, 0, 0, 0].tolist())
                for i, c in enumerate(splits["train"].classes)}
    assert by_label == {"zebra": [0, 1, 2], "apple": [10, 11, 12], "mango": [20, 21, 22]}
    assert splits["test"].classes == ["apple", "mango", "zebra"]  # later split keeps train's classes
    assert splits["test"].labels.tolist() == [0, 1]
    png(root / "test" / "kiwi" / "0.png", _solid(1))
    with pytest.raises(DataError, match="kiwi") as e:
        load_splits(str(root), ("train", "test"), cache=False)
    assert "\n" not in str(e.value)


def test_corrupt_jpeg_named_and_skipped(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "ds", per_class=2)
    bad = root / "train" / "apple" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    split = load_split(f"folder:{root}", "train", cache=False)
    assert len(split) == 6
    assert len(split.skipped) == 1 and str(bad) in split.skipped[0]
    assert all("bad.jpg" not in p for p in split.paths_or_ids)
    for f in (root / "train").rglob("*.png"):
        f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of the 7 images"):
        load_split(f"folder:{root}", "train", cache=False)


def test_mixed_sizes_need_imgsz(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "ds", per_class=1)
    png(root / "train" / "apple" / "big.png", _solid(200, size=16))
    with pytest.raises(DataError, match="big.png: image is 16x16, others are 8x8; pass imgsz"):
        load_split(str(root), "train", cache=False)
    split = load_split(str(root), "train", imgsz=4, cache=False)
    assert split.images.shape == (4, 3, 4, 4)
    big = split.paths_or_ids.index(os.path.join("train", "apple", "big.png"))
    assert split.images[big].unique().tolist() == [200]  # a solid image stays solid when resized


def test_zips_split_archives_and_whole_archive(tmp_path: Path) -> None:
    src = make_folders(tmp_path / "src")
    make_folders(src, classes=("apple", "zebra"), per_class=1, split="test")
    per_split = tmp_path / "zipped"
    per_split.mkdir()
    for s in ("train", "test"):  # like shared/data/cifar10: train.zip holding train/<class>/...
        _zip_tree(per_split / f"{s}.zip", src, src / s)
    whole = _zip_tree(tmp_path / "all.zip", src, src)
    ref = load_split(str(src), "train", cache=False)
    for spec in (str(per_split), f"zip:{whole}", str(whole)):
        got = load_splits(spec, ("train", "test"), cache=False)
        assert got["train"].classes == ref.classes
        order = np.argsort(got["train"].paths_or_ids)
        assert torch.equal(got["train"].images[order], ref.images[np.argsort(ref.paths_or_ids)])
        assert got["test"].labels.tolist() == [0, 2]
    assert parse_classify_data(str(whole)).kind == "zip"


def test_cache_second_load_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_folders(tmp_path / "src")
    root = tmp_path / "z"
    root.mkdir()
    zpath = _zip_tree(root / "train.zip", src, src / "train")
    monkeypatch.setenv("VISIONLAB_CACHE", str(tmp_path / "cache"))
    first = load_split(str(root), "train")
    cached = list((tmp_path / "cache" / "classify").glob("*.npz"))
    assert len(cached) == 1

    import visionlab.data.classify_formats as fmt

    def fail(*a: object) -> None:
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(fmt, "read_image_bytes", fail)
    second = load_split(str(root), "train")
    assert torch.equal(first.images, second.images) and first.paths_or_ids == second.paths_or_ids
    monkeypatch.undo()
    monkeypatch.setenv("VISIONLAB_CACHE", str(tmp_path / "cache"))
    png(src / "train" / "apple" / "9.png", _solid(99))  # archive changes -> new key -> decoded again
    _zip_tree(zpath, src, src / "train")
    assert len(load_split(str(root), "train")) == 10
    assert len(list((tmp_path / "cache" / "classify").glob("*.npz"))) == 2


def test_bad_specs_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        parse_classify_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        parse_classify_data(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no CIFAR-10 python batches"):
        parse_classify_data(f"cifar10:{tmp_path / 'empty'}")


# ----------------------------------------------------------------------------- partitions


def _labelled(counts: list[int]) -> "object":
    from visionlab.data.classify import ClassifySplit

    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    n = len(labels)
    return ClassifySplit(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), labels, [str(i) for i in range(len(counts))],
                         [str(i) for i in range(n)])


def test_holdout_is_stratified_disjoint_and_seeded() -> None:
    split = _labelled([10, 20, 30])
    train, val = holdout(split, 0.1, seed=3)
    assert torch.bincount(val.labels).tolist() == [1, 2, 3]
    assert torch.bincount(train.labels).tolist() == [9, 18, 27]
    ids_t, ids_v = set(train.paths_or_ids), set(val.paths_or_ids)
    assert not ids_t & ids_v and len(ids_t | ids_v) == 60
    assert holdout(split, 0.1, seed=3)[1].paths_or_ids == val.paths_or_ids
    assert holdout(split, 0.1, seed=4)[1].paths_or_ids != val.paths_or_ids
    with pytest.raises(DataError):
        holdout(split, 1.0)


def test_fraction_subset_keeps_class_balance() -> None:
    sub = fraction_subset(_labelled([10, 20, 30]), 0.5, seed=0)
    assert torch.bincount(sub.labels).tolist() == [5, 10, 15]
    assert fraction_subset(_labelled([4, 4]), 0.01, seed=0).labels.tolist() == [0, 1]  # at least one per class


# ----------------------------------------------------------------------------- augmentation


def _batch(b: int = 16, c: int = 3, h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.randint(1, 256, (b, c, h, w), generator=torch.Generator().manual_seed(1)).to(torch.uint8)


def test_flip_flips_exactly_the_drawn_samples() -> None:
    x = _batch()
    out = BatchAugment(flip=True, translate=0)(x, torch.Generator().manual_seed(7))
    expected = torch.rand(len(x), generator=torch.Generator().manual_seed(7)) < 0.5  # same first draw
    assert 0 < expected.sum() < len(x)
    for i in range(len(x)):
        assert torch.equal(out[i], x[i].flip(-1) if expected[i] else x[i])
    assert torch.equal(BatchAugment(flip=False, translate=0)(x, torch.Generator().manual_seed(7)), x)


def test_translate_equals_reflect_pad_and_crop() -> None:
    x = _batch()
    t = 3
    out = BatchAugment(flip=False, translate=t)(x, torch.Generator().manual_seed(5))
    shifts = torch.randint(-t, t + 1, (len(x), 2), generator=torch.Generator().manual_seed(5)).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (t, t), (t, t)), mode="reflect")
    h, w = x.shape[-2:]
    moved = 0
    for i, (dy, dx) in enumerate(shifts):
        crop = padded[i, :, t + dy:t + dy + h, t + dx:t + dx + w]
        assert np.array_equal(out[i].numpy(), crop)
        moved += (dy, dx) != (0, 0)
    assert moved > 0  # content really shifted
    # one-hot pixel: a shift of (dy, dx) moves pixel (y, x) to (y - dy, x - dx)
    dot = torch.zeros(1, 1, 12, 12, dtype=torch.uint8)
    dot[0, 0, 6, 6] = 255
    g = torch.Generator().manual_seed(11)
    dy, dx = torch.randint(-2, 3, (1, 2), generator=torch.Generator().manual_seed(11))[0].tolist()
    moved_dot = BatchAugment(flip=False, translate=2)(dot, g)
    assert moved_dot[0, 0, 6 - dy, 6 - dx] == 255 and moved_dot.sum() == 255


def test_cutout_zeroes_one_square() -> None:
    x = torch.full((8, 3, 10, 10), 200, dtype=torch.uint8)
    out = BatchAugment(flip=False, translate=0, cutout=4)(x, torch.Generator().manual_seed(0))
    zero = out == 0
    assert (zero.sum(dim=(2, 3)) == 16).all()  # 4x4 per sample and channel
    for i in range(len(x)):
        ys, xs = torch.nonzero(zero[i, 0], as_tuple=True)
        assert ys.max() - ys.min() == 3 and xs.max() - xs.min() == 3  # a square, not scattered pixels
        assert torch.equal(zero[i, 0], zero[i, 2])  # same square on every channel
    assert (x == 200).all()  # the input batch is not modified in place


def test_augment_deterministic_for_a_seed_and_keeps_dtype() -> None:
    aug = BatchAugment(flip=True, translate=4, cutout=3)
    x = _batch()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.uint8 and a.shape == x.shape
    f = aug(x.float(), torch.Generator().manual_seed(1))
    assert f.dtype == torch.float32 and torch.equal(f, a.float())  # same result on float batches


# ----------------------------------------------------------------------------- loader


def test_loader_covers_every_index_once_and_reseeds_per_epoch() -> None:
    split = _labelled([7, 6])
    loader = TensorLoader(split, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3),
                          dtype=torch.float32)
    assert len(loader) == 4
    epochs = []
    for _ in range(2):
        batches = list(loader)
        idx = torch.cat([b["index"] for b in batches])
        assert sorted(idx.tolist()) == list(range(13))
        assert torch.equal(torch.cat([b["target"] for b in batches]), split.labels[idx])
        assert batches[0]["image"].dtype == torch.float32 and batches[0]["image"].shape == (4, 1, 2, 2)
        epochs.append(idx)
    assert not torch.equal(epochs[0], epochs[1])  # each iteration is a new epoch
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b["index"] for b in loader]), epochs[0])  # replay (resume)
    dropped = TensorLoader(split, batch_size=4, shuffle=True, drop_last=True)
    assert len(dropped) == 3 and all(len(b["index"]) == 4 for b in dropped)


def test_rank_shards_do_not_overlap() -> None:
    split = _labelled([5, 5])
    shards = [torch.cat([b["index"] for b in TensorLoader(split, 2, shuffle=True, rank=r, world_size=3)])
              for r in range(3)]
    flat = torch.cat(shards).tolist()
    assert sorted(flat) == list(range(10))  # every sample exactly once over the ranks
    train = [TensorLoader(split, 1, shuffle=True, drop_last=True, rank=r, world_size=3) for r in range(3)]
    assert {len(t) for t in train} == {3}  # equal batch counts for DDP
    seen = [i for t in train for b in t for i in b["index"].tolist()]
    assert len(seen) == len(set(seen)) == 9
    with pytest.raises(ValueError):
        TensorLoader(split, 2, rank=3, world_size=3)


def test_bench_reports_images_per_second() -> None:
    split = _labelled([64, 64])
    split.images = torch.randint(0, 256, (128, 3, 16, 16), dtype=torch.uint8)
    out = bench(split, batch_size=32, batches=6)
    assert out["batches"] == 6 and out["images"] == 6 * 32 and out["images_per_s"] > 0


# ----------------------------------------------------------------------------- the real CIFAR-10 JPEGs


@pytest.fixture(scope="module")
def real_cifar_test(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, float]:
    root = shared_path("data", "cifar10")
    cache = tmp_path_factory.mktemp("cache")
    start = time.perf_counter()
    split = load_split(str(root), "test", cache_root=cache)
    return split, cache, time.perf_counter() - start


def test_real_cifar10_test_zip(real_cifar_test: tuple) -> None:
    split, cache, _ = real_cifar_test
    assert split.images.shape == (10000, 3, 32, 32) and not split.skipped
    assert split.classes == list(CIFAR10_CLASSES)  # sorted folder names == the standard order
    assert torch.bincount(split.labels).tolist() == [1000] * 10
    assert split.paths_or_ids[0] == "test/airplane/0000.jpg"
    mean = split.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4941, 0.4851, 0.4504]), atol=2e-4)  # SOURCE.md statistics
    start = time.perf_counter()
    again = load_split(str(shared_path("data", "cifar10")), "test", cache_root=cache)
    assert time.perf_counter() - start < 3.0
    assert torch.equal(again.images, split.images)


def test_write_idx_bytes_follow_the_format_and_read_back(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4], dtype=np.uint8)
    write_idx(tmp_path / "l-idx1-ubyte", labels)
    assert (tmp_path / "l-idx1-ubyte").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])
    images = (np.arange(2 * 3 * 4) % 256).reshape(2, 3, 4)
    write_idx(tmp_path / "i-idx3-ubyte.gz", images)
    raw = gzip.decompress((tmp_path / "i-idx3-ubyte.gz").read_bytes())
    assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    np.testing.assert_array_equal(read_idx(tmp_path / "i-idx3-ubyte.gz", 0x0803), images)
