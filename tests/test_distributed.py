"""Two gloo processes on CPU under torchrun: training matches single-process within tolerance,
evaluation matches exactly, and sharded prediction handles every image exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY, run_cli

pytestmark = pytest.mark.ddp


def torchrun(*args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "VISIONLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "visionlab.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_training_matches_single_process(tmp_path: Path) -> None:
    common = [*TINY, "epochs=2", "batch=4", "threads=1", f"project={tmp_path}", "plots=false"]
    code, out = run_cli("segment", "train", *common, "name=single")
    assert code == 0, out
    torchrun("segment", "train", *common, "name=ddp")
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    # same global batch and schedule; shuffles and per-rank BatchNorm statistics differ, so not bit-equal
    assert ddp["val"]["miou"] == pytest.approx(single["val"]["miou"], abs=0.08)
    rows = lambda run: [ln.split(",") for ln in (tmp_path / run / "metrics.csv").read_text().splitlines()]  # noqa: E731
    s, d = rows("single"), rows("ddp")
    loss_col = s[0].index("train/loss")
    assert float(d[-1][loss_col]) == pytest.approx(float(s[-1][loss_col]), rel=0.15)
    assert not (tmp_path / "ddp2").exists()  # one run folder, written by rank 0 only


def test_two_process_val_equals_single_process(tiny_run: Path, tmp_path: Path) -> None:
    code, out = run_cli("segment", "val", f"model={tiny_run}", "workers=0", "synthetic_val=7", f"project={tmp_path}",
                        "name=single")
    assert code == 0, out
    torchrun("segment", "val", f"model={tiny_run}", "workers=0", "synthetic_val=7", f"project={tmp_path}", "name=ddp")
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # 7 images over 2 ranks (4 + 3): no padding duplicates, so the reduced confusion matrix is identical
    for key in ("miou", "pixel_acc", "iou/flat", "iou/human"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-9, nan_ok=True)


def test_two_process_prediction_shards_images_once(tiny_run: Path, tmp_path: Path) -> None:
    from visionlab.data.synthetic import render_scene

    src = tmp_path / "unlabeled"
    src.mkdir()
    for i in range(7):
        Image.fromarray(render_scene(100 + i, 64, 96).image).save(src / f"img{i}.png")
    torchrun("segment", "predict", f"model={tiny_run}", f"source={src}", f"project={tmp_path}", "name=pl")
    summary = json.loads((tmp_path / "pl" / "summary.json").read_text())
    per_rank = summary["per_rank"]
    assert len(per_rank) == 2 and all(per_rank)
    done = [Path(p).name for shard in per_rank for p in shard]
    assert sorted(done) == sorted(f"img{i}.png" for i in range(7))  # every image, none twice
    assert len({Path(p).name for p in done}) == 7
    assert len(list((tmp_path / "pl" / "masks").glob("*.png"))) == 7


def test_error_on_one_rank_stops_every_rank(tiny_run: Path, tmp_path: Path) -> None:
    """Only rank 1 reads the broken label (no cache, sharded evaluation): the run ends with its error
    instead of rank 0 waiting forever in a collective."""
    import numpy as np

    from conftest import png

    root = tmp_path / "ds"
    for i in range(4):
        png(root / "images" / "val" / f"s{i}.png", np.zeros((32, 32, 3), np.uint8))
        png(root / "masks" / "val" / f"s{i}.png", np.full((32, 32), 9 if i == 1 else 1, np.uint8))  # 9: no category
    env = {**os.environ, "VISIONLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "visionlab",
           "segment", "val", f"model={tiny_run}", f"data=folder:{root}", "imgsz=32", "cache=false",
           "workers=0", "batch=1", f"project={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode != 0
    assert "s1.png" in proc.stdout + proc.stderr


def test_a_non_finite_flag_on_one_rank_reaches_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "flag.py"
    script.write_text(
        "import torch\n"
        "from visionlab.engine import distributed as dist\n"
        "dist.setup('cpu')\n"
        "ok = dist.all_ranks_true(dist.rank() != 1, torch.device('cpu'))\n"
        "print(f'rank {dist.rank()} all_ok={ok}')\n"
        "dist.cleanup()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0 all_ok=False" in proc.stdout and "rank 1 all_ok=False" in proc.stdout
