"""Small engine/runtime units: lr schedule, DDP shard sampler, run folders, disk checks, device selection."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from visionlab.engine.distributed import ShardSampler
from visionlab.engine.trainer import lr_factor
from visionlab.utils import runtime
from visionlab.utils.runtime import EnvironmentProblem, ensure_writable, increment_path, select_device

# ---------------------------------------------------------------- lr_factor


def test_lr_warmup_is_linear_and_reaches_one():
    # warm-up 4 steps: (step + 1) / 4
    assert [lr_factor(s, 4, 20, 0.01) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20, 0.01) == 1.0  # cosine starts at 1


def test_lr_cosine_values():
    # after warm-up: lrf + (1 - lrf) * 0.5 * (1 + cos(pi * (step - 4) / 16))
    assert lr_factor(12, 4, 20, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)  # halfway: cos = 0
    assert lr_factor(8, 4, 20, 0.01) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(20, 4, 20, 0.01) == pytest.approx(0.01, abs=1e-12)  # ends at lrf
    assert lr_factor(25, 4, 20, 0.01) == pytest.approx(0.01, abs=1e-12)  # stays there
    assert lr_factor(10, 0, 10, 0.2) == pytest.approx(0.2, abs=1e-12)


def test_lr_monotone_after_warmup():
    total, warm, lrf = 50, 5, 0.05
    values = [lr_factor(s, warm, total, lrf) for s in range(warm, total + 1)]
    assert all(b < a for a, b in zip(values, values[1:])), values
    assert values[0] == 1.0 and values[-1] == pytest.approx(lrf)
    warmup = [lr_factor(s, warm, total, lrf) for s in range(warm)]
    assert all(b > a for a, b in zip(warmup, warmup[1:]))
    assert all(lrf <= v <= 1.0 for v in warmup + values)


def test_lr_without_warmup_starts_at_one():
    assert lr_factor(0, 0, 10, 0.01) == 1.0
    assert lr_factor(0, 0, 0, 0.01) == 1.0  # no division by zero


def test_lr_factor_drives_lambdalr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 2, 6, 0.1))
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.05, 0.1, 0.1, 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), 0.055,
                0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4))), 0.01]
    assert lrs == pytest.approx(expected)


# ---------------------------------------------------------------- ShardSampler


@pytest.mark.parametrize("length, world", [(10, 3), (9, 3), (7, 2), (1, 1), (2, 5), (0, 3), (3, 4), (101, 8)])
def test_shard_sampler_covers_every_index_once(length, world):
    shards = [list(ShardSampler(length, world, r)) for r in range(world)]
    merged = sorted(i for s in shards for i in s)
    assert merged == list(range(length))  # every index exactly once, no padding duplicates
    for r, s in enumerate(shards):
        assert len(ShardSampler(length, world, r)) == len(s)
        assert s == list(range(r, length, world))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shard_sampler_length_smaller_than_world():
    shards = [list(ShardSampler(2, 5, r)) for r in range(5)]
    assert shards == [[0], [1], [], [], []]


def test_shard_sampler_reads_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    s = ShardSampler(8)
    assert list(s) == [2, 5] and len(s) == 2
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert list(ShardSampler(4)) == [0, 1, 2, 3]


# ---------------------------------------------------------------- increment_path


def test_increment_path(tmp_path):
    base = tmp_path / "runs" / "train"
    assert increment_path(base) == base  # free: used as is
    base.mkdir(parents=True)
    assert increment_path(base) == tmp_path / "runs" / "train2"
    (tmp_path / "runs" / "train2").mkdir()
    assert increment_path(base) == tmp_path / "runs" / "train3"
    (tmp_path / "runs" / "train3").mkdir()
    assert increment_path(base) == tmp_path / "runs" / "train4"


def test_increment_path_exist_ok_keeps_name(tmp_path):
    base = tmp_path / "train"
    base.mkdir()
    (tmp_path / "train2").mkdir()
    assert increment_path(base, exist_ok=True) == base


def test_increment_path_from_numbered_name(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train2").mkdir()
    assert increment_path(tmp_path / "train2") == tmp_path / "train3"


def test_increment_path_does_not_create(tmp_path):
    base = tmp_path / "val"
    base.mkdir()
    new = increment_path(base)
    assert new == tmp_path / "val2" and not new.exists()


# ---------------------------------------------------------------- ensure_writable


def test_ensure_writable_creates_folder_and_leaves_nothing(tmp_path):
    folder = tmp_path / "a" / "b"
    ensure_writable(folder, need_bytes=1)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_ensure_writable_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        try:  # root (or CAP_DAC_OVERRIDE) ignores the mode bits: nothing to test then
            (folder / ".probe").write_bytes(b"x")
            (folder / ".probe").unlink()
            pytest.skip("chmod does not stop this user from writing (running as root?)")
        except PermissionError:
            pass
        with pytest.raises(EnvironmentProblem) as e:
            ensure_writable(folder, need_bytes=1)
        assert f"run folder {folder} is not writable" in str(e.value)
        assert "Permission denied" in str(e.value)
    finally:
        folder.chmod(0o700)


def test_ensure_writable_permission_error_message(tmp_path, monkeypatch):
    """Same message when the probe write is refused (simulated, so it also runs as root)."""

    def refuse(self, data):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(EnvironmentProblem) as e:
        ensure_writable(tmp_path / "x", need_bytes=1)
    assert str(e.value) == f"run folder {tmp_path / 'x'} is not writable: Permission denied"


def test_ensure_writable_parent_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EnvironmentProblem, match="is not writable"):
        ensure_writable(blocker / "run", need_bytes=1)


def test_ensure_writable_not_enough_space(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    need = free + 2**40
    with pytest.raises(EnvironmentProblem) as e:
        ensure_writable(tmp_path, need_bytes=need)
    msg = str(e.value)
    assert f"free on the disk of {tmp_path}" in msg
    assert f"need at least {need / 2**20:.0f} MiB" in msg


def test_ensure_writable_reports_free_space_from_disk_usage(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(runtime.shutil, "disk_usage",
                        lambda p: type(usage)(usage.total, usage.used, 10 * 2**20))
    with pytest.raises(EnvironmentProblem) as e:
        ensure_writable(tmp_path)  # default need: 50 MiB
    assert str(e.value) == f"only 10 MiB free on the disk of {tmp_path}; need at least 50 MiB"
    ensure_writable(tmp_path, need_bytes=10 * 2**20)  # exactly enough is fine


# ---------------------------------------------------------------- select_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_select_device_cuda_without_cuda(no_cuda, spec):
    with pytest.raises(EnvironmentProblem) as e:
        select_device(spec)
    assert "CUDA is not available" in str(e.value)
    assert "device=cpu" in str(e.value)


def test_select_device_auto_and_cpu(no_cuda):
    assert select_device("auto") == torch.device("cpu")
    assert select_device("") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["tpu", "mps", "gpu"])
def test_select_device_unknown_raises(spec):
    with pytest.raises(EnvironmentProblem, match=f"device={spec} not understood"):
        select_device(spec)


def test_select_device_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(EnvironmentProblem, match=r"device=cuda:1: only 1 CUDA device\(s\) present"):
        select_device("cuda:1")
    assert select_device("cuda:0") == torch.device("cuda", 0)



def test_segment_postprocess_matches_upsample_then_argmax() -> None:
    """The channel-at-a-time argmax (bounded memory) gives exactly the ids of upsampling all logits first,
    ties included (the first channel wins, as in argmax)."""
    import torch

    from visionlab.tasks.base import get_task, upsample

    task = get_task("segment")
    torch.manual_seed(0)
    logits = torch.randn(8, 12, 17)
    logits[3, :4] = logits[5, :4] = 9.0  # exact ties between channels 3 and 5
    for size in [(12, 17), (48, 68), (37, 101), (7, 9)]:
        expected = upsample(logits, size).argmax(0).to(torch.uint8).numpy()
        np.testing.assert_array_equal(task.postprocess(logits, size), expected)


def test_wrong_architecture_checkpoint_names_the_keys(tmp_path) -> None:
    import visionlab.tasks  # noqa: F401  (registers the models)
    from visionlab.engine.model_io import load_model
    from visionlab.models.registry import create_model
    from visionlab.utils.checkpoint import CheckpointError, save_checkpoint

    state = create_model("unet_mini", num_classes=8).state_dict()  # segment weights ...
    meta = {"task": "depth", "arch": "depth_cnn", "arch_kwargs": {"encoder": "resnet18", "width": 16}}  # ... as depth
    save_checkpoint(tmp_path / "w.safetensors", state, meta)
    with pytest.raises(CheckpointError, match=r"weights do not fit model depth_cnn: \d+ missing keys \[net\.") as e:
        load_model(tmp_path / "w.safetensors")
    assert "unexpected keys" in str(e.value) and "\n" not in str(e.value)
