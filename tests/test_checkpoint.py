"""visionlab.utils.checkpoint / files: safetensors checkpoints with trainer state, corrupt files, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from visionlab.utils.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from visionlab.utils.files import atomic_write, atomic_write_json, atomic_write_text


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def make_training(seed: int = 0):
    model = tiny_model(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.85, 0.99), weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(2, 3, 6, 6, generator=g), torch.randint(0, 2, (2, 6, 6), generator=g)


def train_step(model, opt, sched, step: int) -> None:
    x, y = batch(step)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def assert_state_equal(a, b) -> None:
    """Deep equality with exact types (int keys stay int, tuples stay tuples, tensors bit-equal)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b]
        for k in a:
            assert_state_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_state_equal(x, y)
    else:
        assert a == b


# ---------------------------------------------------------------- weights + meta


def test_weights_and_meta_roundtrip(tmp_path):
    model = tiny_model()
    meta = {"task": "segment", "arch": "tiny", "arch_kwargs": {"num_classes": 2}, "imgsz": [64, 96],
            "epoch": 3, "metrics": {"miou": 0.25}, "path": tmp_path / "x"}  # Path -> str via default=str
    path = save_checkpoint(tmp_path / "w" / "best.safetensors", model.state_dict(), meta)
    assert path == tmp_path / "w" / "best.safetensors" and path.is_file()

    state, meta2, train_state = load_checkpoint(path)
    assert train_state is None
    assert meta2 == {**meta, "path": str(tmp_path / "x")}
    ref = model.state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        assert state[k].dtype == v.dtype
        assert torch.equal(state[k], v), k
    # num_batches_tracked (int64 scalar) survives
    assert state["1.num_batches_tracked"].dtype == torch.int64

    fresh = tiny_model(seed=1)
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 5, 5)
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))


def test_weights_only_train_state_request_raises(tmp_path):
    path = save_checkpoint(tmp_path / "best.safetensors", tiny_model().state_dict(), {"task": "segment"})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, with_train_state=True)
    assert str(path) in str(e.value)
    assert "weights only" in str(e.value)


# ---------------------------------------------------------------- trainer state


def test_train_state_roundtrip_adamw_and_lambdalr(tmp_path):
    model, opt, sched = make_training()
    for step in range(3):
        train_step(model, opt, sched, step)
    history = [{"epoch": 1, "train/loss": 0.5, "miou": float("nan")}, {"epoch": 2, "train/loss": 0.25}]
    ts = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 2, "best_fitness": 0.125,
          "stale": 1, "history": history, "pair": (1, 2.5, "x"), "nested": {3: (torch.arange(4),)}}
    path = save_checkpoint(tmp_path / "last.safetensors", model.state_dict(), {"epoch": 3}, ts)

    _, meta, loaded = load_checkpoint(path, with_train_state=True)
    assert meta == {"epoch": 3}

    opt_sd, loaded_opt = opt.state_dict(), loaded["optimizer"]
    # optimizer state is keyed by int parameter index
    assert sorted(loaded_opt["state"]) == [0, 1, 2, 3, 4, 5]
    assert all(type(k) is int for k in loaded_opt["state"])
    assert set(loaded_opt["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert float(loaded_opt["state"][0]["step"]) == 3.0
    assert_state_equal(opt_sd["state"], loaded_opt["state"])
    assert loaded_opt["param_groups"][0]["betas"] == (0.85, 0.99)
    assert type(loaded_opt["param_groups"][0]["betas"]) is tuple
    assert loaded_opt["param_groups"][0]["params"] == [0, 1, 2, 3, 4, 5]
    assert_state_equal(opt_sd["param_groups"], loaded_opt["param_groups"])

    assert_state_equal(sched.state_dict(), loaded["scheduler"])
    assert loaded["scheduler"]["last_epoch"] == 3
    assert loaded["scheduler"]["_last_lr"] == [pytest.approx(0.01 / 4)]

    assert loaded["epoch"] == 2 and loaded["stale"] == 1 and loaded["best_fitness"] == 0.125
    assert loaded["pair"] == (1, 2.5, "x") and type(loaded["pair"]) is tuple
    assert loaded["history"][1] == {"epoch": 2, "train/loss": 0.25}
    assert loaded["history"][0]["miou"] != loaded["history"][0]["miou"]  # NaN survives JSON
    assert list(loaded["nested"]) == [3]
    assert type(loaded["nested"][3]) is tuple and torch.equal(loaded["nested"][3][0], torch.arange(4))


def test_resumed_optimizer_matches_uninterrupted(tmp_path):
    # uninterrupted reference: 4 steps
    ref_model, ref_opt, ref_sched = make_training()
    for step in range(4):
        train_step(ref_model, ref_opt, ref_sched, step)

    # interrupted run: 3 steps, checkpoint, resume into fresh objects, 1 more step
    model, opt, sched = make_training()
    for step in range(3):
        train_step(model, opt, sched, step)
    path = save_checkpoint(tmp_path / "last.safetensors", model.state_dict(), {},
                           {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    del model, opt, sched

    state, _, ts = load_checkpoint(path, with_train_state=True)
    model2, opt2, sched2 = make_training(seed=7)  # different init: everything must come from the file
    model2.load_state_dict(state)
    opt2.load_state_dict(ts["optimizer"])
    sched2.load_state_dict(ts["scheduler"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01 / 4)
    train_step(model2, opt2, sched2, 3)

    for (name, a), b in zip(ref_model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    assert opt2.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] == pytest.approx(0.01 / 5)
    assert_state_equal(ref_opt.state_dict()["state"], opt2.state_dict()["state"])


# ---------------------------------------------------------------- broken files


def _good_checkpoint(tmp_path: Path) -> Path:
    model, opt, sched = make_training()
    train_step(model, opt, sched, 0)
    return save_checkpoint(tmp_path / "last.safetensors", model.state_dict(), {"task": "segment"},
                           {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})


@pytest.mark.parametrize("with_train_state", [False, True])
def test_truncated_file_raises(tmp_path, with_train_state):
    path = _good_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, with_train_state=with_train_state)
    assert str(path) in str(e.value)


def test_truncated_in_tensor_body_raises(tmp_path):
    """Header intact, only the last bytes of tensor data missing."""
    path = _good_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, os.urandom(4096), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"])
def test_garbage_file_raises(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_missing_file_raises(tmp_path):
    path = tmp_path / "missing.safetensors"
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint file


def test_plain_safetensors_without_metadata_raises(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(path))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    assert FORMAT in str(e.value)


def test_plain_safetensors_with_foreign_metadata_raises(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a visionlab checkpoint"):
        load_checkpoint(path)


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)


# ---------------------------------------------------------------- atomic writes


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_success_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")

    assert atomic_write(target, write) == target
    assert target.read_bytes() == b"new"
    assert not seen[0].exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write("half-writ")
            f.flush()
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, write)
    assert target.read_text() == "old"
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_keyboard_interrupt_cleans_up(tmp_path):
    target = tmp_path / "out.txt"

    def write(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_failure_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.safetensors", {"w": torch.ones(2)}, {"epoch": 1})
    with pytest.raises(TypeError):  # a non-JSON value in the trainer state fails before anything is replaced
        save_checkpoint(path, {"w": torch.zeros(2)}, {"epoch": 2}, {"bad": object()})
    state, meta, _ = load_checkpoint(path)
    assert meta == {"epoch": 1} and torch.equal(state["w"], torch.ones(2))
    assert _temp_files(tmp_path) == []


def test_atomic_write_text_and_json(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "b.json", {"x": 1, "p": tmp_path})
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1, "p": str(tmp_path)}
    assert _temp_files(tmp_path) == []
