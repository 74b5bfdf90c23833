"""The classify task end to end on the engine: train, val, predict, distillation, resume, the optimiser grid,
the shared CIFAR ResNet files; plus the task's pieces (loss, metrics, TTA folding, splits) on hand-computed
values. Data: tiny generated CIFAR-format pickles (10 colour classes, 32x32) in tmp_path."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import png, run_cli, shared_path

from visionlab.cfg import ConfigError, build_config
from visionlab.data.classify import CIFAR10_CLASSES, write_idx
from visionlab.data.io import DataError
from visionlab.tasks.base import get_task

TASK = get_task("classify")
FAST = ["workers=0", "mlflow=false", "batch=32", "threads=1"]
SMALL = ["model=small_cnn", "width=8", "optimizer=adam", "lr=0.01", "label_smoothing=0", "tta=false"]
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0], [0, 0, 128]])


def colour_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """N x 3 x 32 x 32 uint8: the class colour plus noise (separable, not identical)."""
    rng = np.random.default_rng(seed)
    base = PALETTE[labels][:, :, None, None].astype(np.float64)
    return np.clip(base + rng.normal(0, 25, (len(labels), 3, 32, 32)), 0, 255).astype(np.uint8)


def make_cifar(root: Path, per_class: int = 40, test_per_class: int = 4) -> Path:
    """An official-format cifar-10-batches-py folder: 5 train batches + test_batch + batches.meta."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    labels = np.tile(np.arange(10), per_class)
    images = colour_images(labels, 0).reshape(len(labels), -1)
    for b, idx in enumerate(np.array_split(np.arange(len(labels)), 5), 1):
        with open(d / f"data_batch_{b}", "wb") as f:
            pickle.dump({b"data": images[idx], b"labels": labels[idx].tolist()}, f, protocol=2)
    test_labels = np.tile(np.arange(10), test_per_class)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": colour_images(test_labels, 1).reshape(len(test_labels), -1),
                     b"labels": test_labels.tolist()}, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f, protocol=2)
    return root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def trained(cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn, 5 epochs on the colour classes (one run shared by the end-to-end tests)."""
    project = tmp_path_factory.mktemp("runs")
    code, out = run_cli("classify", "train", f"data=cifar10:{cifar}", *FAST, *SMALL, "epochs=5",
                        f"project={project}", "name=tiny")
    assert code == 0, out
    return project / "tiny"


def cfg_for(data: Path, **overrides):
    return build_config(TASK.config_cls, "classify", {"data": f"cifar10:{data}", "workers": 0, **overrides})


# ----------------------------------------------------------------------------- pieces, hand-computed


def test_loss_is_smoothed_ce_and_hinton_kd() -> None:
    from visionlab.tasks.classify import ClassifyLoss

    logits = torch.tensor([[2.0, 0.0, 0.0]])
    batch = {"target": torch.tensor([0])}
    p0 = math.exp(2) / (math.exp(2) + 2)
    assert ClassifyLoss(0.0)(logits, batch).item() == pytest.approx(-math.log(p0), abs=1e-6)
    # smoothing 0.3 over 3 classes: target (0.8, 0.1, 0.1)
    logp = [math.log(p0), math.log(1 / (math.exp(2) + 2)), math.log(1 / (math.exp(2) + 2))]
    smooth = -(0.8 * logp[0] + 0.1 * logp[1] + 0.1 * logp[2])
    assert ClassifyLoss(0.3)(logits, batch).item() == pytest.approx(smooth, abs=1e-6)
    # alpha=1, T=2: T^2 * KL(softmax(t/2) || softmax(s/2)); teacher = student gives 0
    teacher = torch.tensor([[0.0, 2.0, 0.0]])
    pt = np.exp([0, 1, 0]) / np.exp([0, 1, 0]).sum()
    ps = np.exp([1, 0, 0]) / np.exp([1, 0, 0]).sum()
    kl = 4 * float((pt * np.log(pt / ps)).sum())
    kd = ClassifyLoss(0.0, kd_alpha=1.0, kd_temperature=2.0)
    assert kd(logits, {**batch, "teacher": teacher}).item() == pytest.approx(kl, abs=1e-6)
    assert kd(logits, {**batch, "teacher": logits}).item() == pytest.approx(0.0, abs=1e-6)
    half = ClassifyLoss(0.0, kd_alpha=0.5, kd_temperature=2.0)(logits, {**batch, "teacher": teacher}).item()
    assert half == pytest.approx(0.5 * -math.log(p0) + 0.5 * kl, abs=1e-6)
    with pytest.raises(ConfigError, match="same classes"):
        kd(logits, {**batch, "teacher": torch.zeros(1, 5)})


def test_metrics_accuracy_top5_per_class_and_tta_folding() -> None:
    from visionlab.metrics.classify import ClassifyMetrics, fold_tta

    names = [f"c{i}" for i in range(6)]
    m = ClassifyMetrics(names, sync=False)
    logits = torch.tensor([[5., 4, 3, 2, 1, 0],   # true 0: top-1 right
                           [5., 4, 3, 2, 1, 0],   # true 1: top-1 wrong, in top-5
                           [0., 1, 2, 3, 4, 5],   # true 0: rank 6 -> not in top-5
                           [0., 0, 9, 0, 0, 0]])  # true 2: right
    m.update(logits, {"target": torch.tensor([0, 1, 0, 2])})
    out = m.compute()
    assert out["accuracy"] == pytest.approx(2 / 4)
    assert out["top5"] == pytest.approx(3 / 4)
    assert out["acc/c0"] == pytest.approx(1 / 2) and out["acc/c1"] == 0 and out["acc/c2"] == 1
    assert math.isnan(out["acc/c3"])  # no image of c3: no accuracy, and not in the mean
    assert out["mean_class_acc"] == pytest.approx((0.5 + 0 + 1) / 3)
    # TTA: a doubled batch is folded to the mean of both halves' logits
    doubled = torch.cat([torch.tensor([[1., 0]]), torch.tensor([[0., 3]])])
    assert torch.equal(fold_tta(doubled, {"target": torch.tensor([0]), "tta": True}), torch.tensor([[0.5, 1.5]]))
    assert torch.equal(fold_tta(doubled, {"target": torch.tensor([0, 1])}), doubled)


def test_splits_holdout_test_and_batches(cifar: Path) -> None:
    cfg = cfg_for(cifar)
    train, val, test = (TASK.build_dataset(cfg, s, train=s == "train") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (360, 40, 40)  # 10% of every class (4 of 40) held out
    assert set(train.split.paths_or_ids).isdisjoint(val.split.paths_or_ids)
    assert torch.bincount(val.split.labels).tolist() == [4] * 10
    batch = train.__getitems__([0, 5, 7])  # the DataLoader calls this once per batch
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (3, 3, 32, 32)
    assert batch["target"].tolist() == train.split.labels[[0, 5, 7]].tolist() and batch["train"] is True
    assert TASK.collate(batch) is batch
    assert "train" not in val.__getitems__([0])
    with pytest.raises(DataError, match="val_fraction"):
        TASK.build_dataset(cfg_for(cifar, val_fraction=0), "val", train=False)
    assert len(TASK.build_dataset(cfg_for(cifar, val_fraction=0), "train", train=True)) == 400


def test_preprocess_augments_train_batches_reproducibly(cifar: Path) -> None:
    cfg = cfg_for(cifar, translate=2, cutout=4)
    ds = TASK.build_dataset(cfg, "train", train=True)
    raw = ds.__getitems__(list(range(16)))
    torch.manual_seed(3)
    a = TASK.preprocess(dict(raw), torch.device("cpu"), cfg)["image"]
    torch.manual_seed(3)
    b = TASK.preprocess(dict(raw), torch.device("cpu"), cfg)["image"]
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert not torch.equal(a, raw["image"].float())  # something was augmented
    assert ((a == 0).all(1).sum((1, 2)) >= 16).all()  # every image has its 4x4 cutout
    ev = TASK.preprocess(dict(raw, train=False), torch.device("cpu"), cfg)  # eval + tta: image, then mirror
    assert ev["tta"] and torch.equal(ev["image"][16:], raw["image"].float().flip(3))


def test_missing_default_data_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run_cli("classify", "train", *FAST, "epochs=1", f"project={tmp_path}")
    assert code == 2 and "datasets/cifar10" in out and "cifar10:DIR" in out


def test_width_must_fit_the_model(cifar: Path) -> None:
    with pytest.raises(ConfigError, match="whole number"):
        TASK.model_spec(cfg_for(cifar, model="small_cnn", width=0.5))
    with pytest.raises(ConfigError, match="no 'dropout'"):
        TASK.model_spec(cfg_for(cifar, model="fastnet", dropout=0.2))
    name, kwargs = TASK.model_spec(cfg_for(cifar, model="fastnet", width=0.25))
    assert kwargs == {"num_classes": 10, "in_channels": 3, "classes": list(CIFAR10_CLASSES), "width": 0.25}


def test_check_data_names_corrupt_images_and_unknown_classes(tmp_path: Path) -> None:
    from visionlab.utils.progress import console

    for split, cls in (("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "cow")):
        png(tmp_path / "d" / split / cls / "a.png", np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "d" / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with console.capture() as cap:
        code = TASK.check_data(f"folder:{tmp_path / 'd'}", tmp_path / "m.json", console)
    text = cap.get()
    assert code == 1 and "broken.png" in text and "cow" in text
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["splits"]["train"]["class_counts"] == {"cat": 1, "dog": 1}


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_learns_and_reload_reproduces_the_reported_accuracy(trained: Path) -> None:
    for f in ("config.yaml", "metrics.csv", "results.json", "weights/best.safetensors", "confusion_matrix.png",
              "predictions.png", "curves.png"):
        assert (trained / f).is_file(), f
    results = json.loads((trained / "results.json").read_text())
    reported = results["val"]["accuracy"]
    assert reported >= 0.8  # learning floor: chance is 0.1 on these 10 colour classes
    assert results["arch_kwargs"]["classes"] == list(CIFAR10_CLASSES)
    # val with model= only: data, imgsz and the holdout come from the checkpoint; exactly the same number
    code, out = run_cli("classify", "val", f"model={trained}", *FAST, f"project={trained.parent}", "name=val")
    assert code == 0, out
    metrics = json.loads((trained.parent / "val" / "metrics.json").read_text())
    assert metrics["data"] == results["data"] and metrics["accuracy"] == reported
    assert "accuracy" in out and "airplane" in out  # the per-class report


@pytest.mark.slow
def test_predict_writes_topk_json_with_class_names(trained: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, image in zip((0, 3, 8), colour_images(np.array([0, 3, 8]), seed=7)):  # airplane, cat, ship
        png(src / f"img{i}.png", image.transpose(1, 2, 0).copy())
    code, out = run_cli("classify", "predict", f"model={trained}", f"source={src}", "topk=3", *FAST,
                        f"project={tmp_path}", "name=pred")
    assert code == 0, out
    pred = json.loads((tmp_path / "pred" / "json" / "img3.json").read_text())
    assert len(pred["top"]) == 3 and pred["top"][0]["class"] == "cat"
    assert sum(p["prob"] for p in pred["top"]) <= 1 + 1e-6
    rows = (tmp_path / "pred" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "image,label,prob,top" and len(rows) == 4
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["class_histogram"] == {"airplane": 1, "cat": 1, "ship": 1}


@pytest.mark.slow
def test_distillation_uses_the_teacher(trained: Path, cifar: Path, tmp_path: Path) -> None:
    losses = {}
    for name, extra in (("plain", []), ("kd", [f"teacher={trained}", "kd_alpha=1"])):
        code, out = run_cli("classify", "train", f"data=cifar10:{cifar}", *FAST, *SMALL, "epochs=1", "val=false",
                            "plots=false", *extra, f"project={tmp_path}", f"name={name}")
        assert code == 0, out
        losses[name] = float((tmp_path / name / "metrics.csv").read_text().splitlines()[1].split(",")[1])
    # alpha=1: the loss is the KL to a trained teacher, not the (untrained-student) cross-entropy of ~log 10
    assert losses["kd"] != pytest.approx(losses["plain"], rel=1e-3)
    assert losses["plain"] > 1.0


@pytest.mark.slow
def test_resume_of_fastnet_replays_exactly(cifar: Path, tmp_path: Path) -> None:
    """Frozen whitening / BN weights must be frozen again after the rebuild, or the optimizer state of the
    interrupted run would not fit its parameter groups."""
    from visionlab.utils.checkpoint import load_checkpoint

    common = [f"data=cifar10:{cifar}", *FAST, "model=fastnet", "width=0.125", "schedule=constant",
              "warmup_epochs=0", "lr=0.05", "val=false", "plots=false", f"project={tmp_path}"]
    assert run_cli("classify", "train", *common, "epochs=2", "name=full")[0] == 0
    assert run_cli("classify", "train", *common, "epochs=1", "name=cut")[0] == 0
    code, out = run_cli("classify", "train", "resume=true", f"model={tmp_path / 'cut'}", "epochs=2", "mlflow=false")
    assert code == 0, out
    full = load_checkpoint(tmp_path / "full" / "weights" / "last.safetensors")[0]
    resumed = load_checkpoint(tmp_path / "cut" / "weights" / "last.safetensors")[0]
    assert not torch.equal(full["net.whiten.bias"], torch.zeros_like(full["net.whiten.bias"]))
    for key in full:
        assert torch.allclose(full[key].float(), resumed[key].float(), atol=1e-6), key


@pytest.mark.slow
def test_compare_optimizers_tiny_grid(cifar: Path, tmp_path: Path) -> None:
    code, out = run_cli("classify", "compare-optimizers", f"data=cifar10:{cifar}", "optimizers=[sgd]", "epochs=1",
                        "width=8", *FAST, "plots=false", f"project={tmp_path}", "name=grid")
    assert code == 0, out
    root = tmp_path / "grid"
    runs = sorted(p.name for p in root.iterdir() if (p / "results.json").is_file())
    assert runs == ["sgd-bn", "sgd-dropout", "sgd-plain", "sgd-wd"]
    cfg = json.loads((root / "sgd-wd" / "results.json").read_text())
    assert cfg["model"] == "small_cnn"
    table = (root / "compare.md").read_text()
    assert all(r in table for r in runs) and (root / "val_accuracy.png").is_file()


def test_grid_presets() -> None:
    from visionlab.tasks.classify_modes import grid

    small = dict(grid("small"))
    assert len(small) == 12 and small["adam-bn"]["batchnorm"] and small["sgd-wd"]["weight_decay"] > 0
    assert small["rmsprop-plain"] == {"optimizer": "rmsprop", "lr": 0.001, "dropout": 0.0, "weight_decay": 0.0,
                                      "batchnorm": False}
    assert len(grid("full", ["sgd"])) == 8  # every subset of {dropout, wd, bn}


def test_shared_cifar_resnet20_loads_as_a_model() -> None:
    from visionlab.engine.model_io import load_model

    path = shared_path("weights", "cifar10_resnet", "resnet20-12fca82f.th")
    model, meta = load_model(path, task=TASK)
    assert meta["arch"] == "cifar_resnet20" and meta["imgsz"] == [32, 32]
    assert TASK.labels(meta) == list(CIFAR10_CLASSES)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16] = (135, 180, 235)  # sky over ...
    result = TASK.infer(model, [image], (32, 32))[0]
    assert result.probs.shape == (10,) and abs(result.probs.sum() - 1) < 1e-5 and result.label in CIFAR10_CLASSES


@pytest.mark.slow
def test_mnist_idx_grey_28px_runs_end_to_end(tmp_path: Path) -> None:
    """Grey 28x28 digits: resized to imgsz 32 at load, 1-channel model, RGB predict input -> luma."""
    for prefix, n in (("train", 200), ("t10k", 50)):
        labels = np.tile(np.arange(10), n // 10)
        noise = np.random.default_rng(n).normal(0, 8, (n, 28, 28))
        images = np.clip(20 + 23 * labels[:, None, None] + noise, 0, 255)  # class = grey level
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    cfg = cfg_for(tmp_path)
    cfg = cfg.model_copy(update={"data": f"mnist:{tmp_path}"})
    assert TASK.build_dataset(cfg, "test", train=False).split.images.shape == (50, 1, 32, 32)
    code, out = run_cli("classify", "train", f"data=mnist:{tmp_path}", *FAST, *SMALL, "hflip=false", "epochs=4",
                        "plots=false", f"project={tmp_path}", "name=mnist")
    assert code == 0, out
    results = json.loads((tmp_path / "mnist" / "results.json").read_text())
    assert results["arch_kwargs"]["in_channels"] == 1 and results["arch_kwargs"]["classes"][3] == "3"
    assert results["val"]["accuracy"] > 0.3  # chance is 0.1


def test_classification_top_k_and_api_response() -> None:
    from visionlab.tasks.classify import Classification

    result = Classification(np.array([0.1, 0.6, 0.3], np.float32), ["a", "b", "c"])
    assert result.label == "b" and [c for c, _ in result.top(2)] == ["b", "c"]
    out = TASK.encode_response(result, np.zeros((4, 4, 3), np.uint8), "json", {}, {"topk": 2})
    assert out["label"] == "b" and out["chart"]["values"] == {"b": 0.6, "c": 0.3} and len(out["top"]) == 2
