"""The engine's settings rules, one test each: checkpoint < cfg= < command line, resume refuses what it
will not apply, fitness direction and missing keys, duplicate model names, input sizes from the model,
threads, batch splitting, parameter groups, EMA, the teacher hook, `python -m visionlab`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import TINY, png, run_cli

from visionlab.cfg import ConfigError, build_config, parse_overrides
from visionlab.tasks.base import get_task
from visionlab.tasks.segment import SegmentConfig

SEG = get_task("segment")


def seg_cfg(**overrides: Any) -> SegmentConfig:
    return build_config(SegmentConfig, "segment", overrides)


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny folder dataset (train + val) of synthetic scenes with category masks."""
    from visionlab.data.synthetic import render_scene

    root = tmp_path_factory.mktemp("folder_ds")
    for split, seeds in (("train", range(6)), ("val", range(50, 53))):
        for s in seeds:
            scene = render_scene(s, 48, 64)
            png(root / "images" / split / f"s{s}.png", scene.image)
            png(root / "masks" / split / f"s{s}.png", scene.mask)
    return root


@pytest.fixture(scope="module")
def folder_run(folder_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    code, out = run_cli("segment", "train", f"data=folder:{folder_data}", "imgsz=[48,64]", "epochs=1", "batch=3",
                        "workers=0", "mlflow=false", "plots=false", f"project={project}", "name=folder")
    assert code == 0, out
    return project / "folder"


# ---------------------------------------------------------------- precedence


def test_val_evaluates_on_the_data_the_model_was_trained_for(folder_run: Path, folder_data: Path,
                                                             tmp_path: Path) -> None:
    code, out = run_cli("segment", "val", f"model={folder_run}", "workers=0", f"project={tmp_path}", "name=v")
    assert code == 0, out
    saved = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert saved["data"] == f"folder:{folder_data}"  # not the default synthetic scenes
    out = " ".join(out.split())  # the console wraps long lines
    assert "3 images" in out and "imgsz [48, 64]" in out


def test_precedence_checkpoint_then_cfg_file_then_command_line(folder_run: Path, folder_data: Path,
                                                               tmp_path: Path) -> None:
    from visionlab.engine.evaluator import eval_config

    assert eval_config(SEG, {"model": str(folder_run)}, "val").imgsz == (48, 64)  # from the checkpoint
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text("imgsz: [64, 96]\ndata: synthetic\n")
    from_file = eval_config(SEG, {"model": str(folder_run), "cfg": str(cfg_file)}, "val")
    assert from_file.imgsz == (64, 96) and from_file.data == "synthetic"  # cfg= beats the checkpoint
    cli = eval_config(SEG, {"model": str(folder_run), "cfg": str(cfg_file), "imgsz": 32}, "val")
    assert cli.imgsz == (32, 32)  # the command line beats both


def test_a_runs_config_yaml_works_as_cfg_for_a_new_run(folder_run: Path) -> None:
    cfg = seg_cfg(cfg=str(folder_run / "config.yaml"))
    saved = yaml.safe_load((folder_run / "config.yaml").read_text())
    assert cfg.model_dump(mode="json") == saved


def test_resume_refuses_settings_it_would_not_apply(folder_run: Path) -> None:
    code, out = run_cli("segment", "train", "resume=true", f"model={folder_run}", "lr=0.5", "imgsz=64")
    assert code == 2 and "imgsz, lr cannot change" in out and "Traceback" not in out
    code, out = run_cli("segment", "train", "resume=true", f"model={folder_run}", "epoch=3")
    assert code == 2 and "did you mean 'epochs'" in out
    missing = folder_run.parent / "no_such_run"
    code, out = run_cli("segment", "train", "resume=true", f"model={missing}")
    assert code == 2 and f"model={missing}: no such run folder" in out and "Traceback" not in out


def test_resume_may_change_the_epoch_count(folder_run: Path) -> None:
    from visionlab.engine.trainer import train_config

    cfg = train_config(SEG, {"resume": True, "model": str(folder_run), "epochs": 3, "patience": 7})
    assert cfg.epochs == 3 and cfg.patience == 7 and cfg.imgsz == (48, 64) and cfg.resume


# ---------------------------------------------------------------- fitness, registry, sizes


def test_fitness_direction_decides_improvement() -> None:
    from visionlab.tasks.base import better

    class Lower:
        fitness_mode = "min"

    assert better(SEG, 0.5, 0.4) and not better(SEG, 0.4, 0.5)
    assert better(Lower(), 0.4, 0.5) and not better(Lower(), 0.5, 0.4)
    assert better(Lower(), 1.0, None) and not better(Lower(), float("nan"), 1.0)


def test_missing_fitness_key_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    from visionlab.engine.trainer import train

    class NoFitness(type(SEG)):
        fitness_key = "not_a_metric"

    cfg = seg_cfg(**parse_overrides(TINY), epochs=1, project=str(tmp_path), plots=False)
    with pytest.raises(RuntimeError, match="not_a_metric"):
        train(NoFitness(), cfg)


def test_registry_refuses_a_duplicate_name() -> None:
    from visionlab.models.registry import register_model

    def unet_mini(num_classes: int = 8) -> nn.Module:  # same name as a built-in model
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model("segment")(unet_mini)


def test_input_size_rule_comes_from_the_model(tmp_path: Path) -> None:
    from visionlab.engine.model_io import check_input_size
    from visionlab.models.registry import create_model

    fpn = create_model("fpn", num_classes=8, encoder="resnet18")
    mini = create_model("unet_mini", num_classes=8)
    assert fpn.input_multiple == 32 and mini.input_multiple == 1
    check_input_size(mini, seg_cfg(imgsz=100), "unet_mini")  # any size
    with pytest.raises(ConfigError, match=r"multiples of 32 \(e.g. imgsz=\[96,96\]\)"):
        check_input_size(fpn, seg_cfg(imgsz=100), "fpn")
    with pytest.raises(ConfigError, match="crop"):
        check_input_size(fpn, seg_cfg(imgsz=128, crop=[100, 96]), "fpn")


def test_fine_tuning_and_val_check_sizes_against_the_checkpoint_model(tmp_path: Path) -> None:
    from visionlab.models.registry import create_model
    from visionlab.utils.checkpoint import save_checkpoint

    model = create_model("fpn", num_classes=8, encoder="resnet18")
    ckpt = save_checkpoint(tmp_path / "fpn.safetensors", model.state_dict(), {
        "task": "segment", "arch": "fpn", "arch_kwargs": {"num_classes": 8, "encoder": "resnet18"},
        "params": 1, "imgsz": [64, 64], "config": {"imgsz": [64, 64], "data": "synthetic"}})
    code, out = run_cli("segment", "train", *TINY, f"model={ckpt}", "imgsz=100", f"project={tmp_path}")
    assert code == 2 and "multiples of 32" in out
    code, out = run_cli("segment", "val", f"model={ckpt}", "imgsz=[64,100]", "workers=0", f"project={tmp_path}")
    assert code == 2 and "multiples of 32" in out


def test_fine_tuning_starts_from_the_checkpoint(folder_run: Path, folder_data: Path, tmp_path: Path) -> None:
    from visionlab.engine.trainer import _start_model, train_config

    cfg = train_config(SEG, {"model": str(folder_run / "weights" / "best.safetensors"),
                             "data": f"folder:{folder_data}", "imgsz": [48, 64]})
    model, arch = _start_model(SEG, cfg)
    from visionlab.utils.checkpoint import load_checkpoint

    state = load_checkpoint(folder_run / "weights" / "best.safetensors")[0]
    assert arch["arch"] == "unet_mini"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_crop_trains_and_must_fit_inside_imgsz(tmp_path: Path) -> None:
    code, out = run_cli("segment", "train", *TINY, "crop=[32,48]", "epochs=1", "plots=false",
                        f"project={tmp_path}", "name=crop")
    assert code == 0, out
    assert yaml.safe_load((tmp_path / "crop" / "config.yaml").read_text())["crop"] == [32, 48]
    code, out = run_cli("segment", "train", *TINY, "crop=[96,96]", f"project={tmp_path}")
    assert code == 2 and "must fit inside imgsz" in out


# ---------------------------------------------------------------- runtime


def test_threads_respect_omp_affinity_and_local_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    from visionlab.utils.runtime import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == 2  # two ranks on this node share the cores


def test_global_batch_must_split_over_ranks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from visionlab.engine.trainer import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="batch=3 is the global batch"):
        train(SEG, seg_cfg(batch=3, project=str(tmp_path)))


def test_fixed_shards_cover_every_sample_once_and_reshuffle() -> None:
    from visionlab.engine.distributed import FixedShardSampler

    shards = [FixedShardSampler(11, seed=3, num_replicas=2, rank_=r) for r in range(2)]
    seen = [i for s in shards for i in s]
    assert len(seen) == 10 and len(set(seen)) == 10  # equal shares, no duplicates
    first = list(shards[0])
    shards[0].set_epoch(1)
    assert sorted(list(shards[0])) == sorted(first) and list(shards[0]) != first


def test_each_rank_caches_only_what_it_reads() -> None:
    from visionlab.data.segmentation import SegmentationDataset
    from visionlab.engine.distributed import ShardSampler
    from visionlab.engine.evaluator import prefetch

    ds = SegmentationDataset(seg_cfg(imgsz=32, synthetic_val=5), "val", train=False)
    assert ds.cache == {}  # nothing decoded up front
    prefetch(ds, list(ShardSampler(5, 2, 1)))
    assert sorted(ds.cache) == [1, 3]


def test_python_dash_m_visionlab_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "visionlab", "models"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "VISIONLAB_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "unet_mini" in proc.stdout


def test_camvid_folder_with_only_a_test_split_is_recognised(tmp_path: Path) -> None:
    from visionlab.data.segmentation_layouts import list_pairs, parse_data_spec

    png(tmp_path / "test" / "a.png", np.zeros((8, 8, 3), np.uint8))
    png(tmp_path / "testannot" / "a.png", np.full((8, 8), 3, np.uint8))
    spec = parse_data_spec(str(tmp_path))
    assert spec.kind == "camvid" and list(spec.splits) == ["test"] and len(list_pairs(spec, "test")) == 1


# ---------------------------------------------------------------- optimizer groups, EMA, teacher


class _EncDec(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 2, 2))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def test_param_groups_encoder_lr_and_no_weight_decay() -> None:
    from visionlab.engine.trainer import param_groups

    model = _EncDec()
    groups = param_groups(model, seg_cfg(lr=0.01, encoder_lr=0.1, weight_decay=0.05))
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_param[id(model.encoder[0].weight)] == (pytest.approx(0.001), 0.05)
    assert by_param[id(model.encoder[1].weight)] == (pytest.approx(0.001), 0.0)  # a norm: no decay
    assert by_param[id(model.head.weight)] == (0.01, 0.05)
    assert by_param[id(model.pos_embed)] == (0.01, 0.0)  # no_weight_decay() is honoured
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ConfigError, match="has no encoder"):
        param_groups(nn.Linear(2, 2), seg_cfg(encoder_lr=0.1))


def test_ema_average_warms_up_then_uses_the_decay() -> None:
    from visionlab.engine.trainer import ema_average

    avg, new = [torch.zeros(1)], [torch.ones(1)]
    ema_average(0.9)(avg, new, torch.tensor(0))  # decay min(0.9, 1/10) = 0.1
    assert avg[0].item() == pytest.approx(0.9)
    avg = [torch.zeros(1)]
    ema_average(0.9)(avg, new, torch.tensor(1000))  # decay 0.9
    assert avg[0].item() == pytest.approx(0.1)


@pytest.mark.slow
def test_ema_run_saves_the_average_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from visionlab.engine import trainer
    from visionlab.utils.checkpoint import load_checkpoint

    common = [*TINY, "epochs=2", "ema=0.9", "deterministic=true", "threads=1", "plots=false", f"project={tmp_path}"]
    assert run_cli("segment", "train", *common, "name=full")[0] == 0
    write_csv = trainer._write_metrics_csv

    def interrupt_after_first_epoch(path: Path, history: list) -> None:  # last.safetensors is already written
        write_csv(path, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_write_metrics_csv", interrupt_after_first_epoch)
    assert run_cli("segment", "train", *common, "name=cut")[0] == 130
    monkeypatch.setattr(trainer, "_write_metrics_csv", write_csv)
    code, out = run_cli("segment", "train", "resume=true", f"model={tmp_path / 'cut'}")
    assert code == 0, out
    full, _, ts = load_checkpoint(tmp_path / "full" / "weights" / "last.safetensors", with_train_state=True)
    resumed = load_checkpoint(tmp_path / "cut" / "weights" / "last.safetensors")[0]
    assert any(not torch.equal(full[k], ts["raw_model"][k]) for k in full)  # weights file = the average
    for k in full:
        assert torch.allclose(full[k].float(), resumed[k].float(), atol=1e-6), k


def test_teacher_outputs_reach_the_loss_without_gradients(tiny_run: Path, tmp_path: Path) -> None:
    from visionlab.engine.trainer import train

    seen: list[torch.Tensor] = []

    class Spy(type(SEG)):
        def build_loss(self, cfg: Any, train_set: Any) -> nn.Module:
            inner = super().build_loss(cfg, train_set)

            class Loss(nn.Module):
                def forward(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
                    if "teacher" in batch:  # evaluation batches have no teacher outputs
                        seen.append(batch["teacher"])
                    return inner(outputs, batch)

            return Loss()

    cfg = seg_cfg(**parse_overrides(TINY), epochs=1, teacher=str(tiny_run), project=str(tmp_path),
                  plots=False)
    train(Spy(), cfg)
    assert len(seen) == 4  # 16 scenes / batch 4
    assert all(t.shape == (4, 8, 64, 64) and not t.requires_grad for t in seen)


def test_compare_ranks_like_with_like_in_each_direction() -> None:
    from visionlab.engine.compare import rank_like_with_like

    recs = [
        {"task": "segment", "data": "camvid", "split": "val", "fitness_key": "miou", "fitness_mode": "max", "fitness": 0.5},
        {"task": "segment", "data": "camvid", "split": "val", "fitness_key": "miou", "fitness_mode": "max", "fitness": 0.7},
        {"task": "segment", "data": "synthetic", "split": "val", "fitness_key": "miou", "fitness_mode": "max", "fitness": 0.9},
        {"task": "depth", "data": "nyu", "split": "val", "fitness_key": "absrel", "fitness_mode": "min", "fitness": 0.2},
        {"task": "depth", "data": "nyu", "split": "val", "fitness_key": "absrel", "fitness_mode": "min", "fitness": 0.1},
        {"task": "depth", "data": "nyu", "split": "val", "fitness_key": "absrel", "fitness_mode": "min", "fitness": None},
    ]
    rank_like_with_like(recs)
    assert [r.get("rank") for r in recs] == ["2/2", "1/2", "1/1", "2/2", "1/2", None]


def test_compare_table_turns_when_too_wide_for_the_terminal() -> None:
    from rich.console import Console

    from visionlab.engine.compare import print_table

    columns = ["run", "task", "model", "miou", "iou/vehicle"]
    records = [{"run": "runs/segment/long_run_name_a", "task": "segment", "model": "fpn_efficientnet_lite2",
                "miou": 0.81234, "iou/vehicle": 0.9},
               {"run": "runs/segment/long_run_name_b", "task": "segment", "model": "unet_mini", "miou": 0.5}]
    wide, narrow = Console(width=200, record=True), Console(width=60, record=True)
    for console in (wide, narrow):
        print_table(columns, records, console, "2 runs")
    wide_text, narrow_text = wide.export_text(), narrow.export_text()
    assert "one column per run" not in wide_text
    assert wide_text.count("\n") < narrow_text.count("\n")  # one row per run vs one row per field
    assert "one column per run" in narrow_text
    # every name and number whole on one line in the turned table
    for value in ("in runs/segment", "long_run_name_a", "fpn_efficientnet_lite2", "0.8123", "vehicle"):
        assert value in narrow_text, narrow_text
