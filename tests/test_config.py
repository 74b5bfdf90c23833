"""visionlab.cfg: default YAML, key=value parsing, precedence, unknown keys and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visionlab.cfg import CFG_DIR, ConfigError, build_config, default_config, parse_overrides, read_yaml
from visionlab.tasks.segment import SegmentConfig


def build(overrides: dict | None = None) -> SegmentConfig:
    return build_config(SegmentConfig, "segment", overrides or {})


def write_yaml(path: Path, mapping: dict) -> Path:
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults


def test_defaults_load_and_validate():
    cfg = build()
    assert isinstance(cfg, SegmentConfig)
    assert cfg.task == "segment"
    assert cfg.data == "synthetic"
    assert cfg.imgsz == (128, 128)
    assert cfg.epochs == 10
    assert cfg.batch == 8
    assert cfg.optimizer == "adamw"
    assert cfg.lr == pytest.approx(0.002)
    assert cfg.lrf == pytest.approx(0.01)
    assert cfg.scale == (0.5, 1.5)
    assert cfg.loss == "ce_dice"
    assert cfg.pretrained is None
    assert cfg.encoder is None
    assert cfg.source is None
    assert cfg.ignore_void is True
    assert cfg.exist_ok is False


def test_default_yaml_holds_exactly_the_engine_keys():
    from visionlab.cfg import BaseConfig

    keys = set(yaml.safe_load((CFG_DIR / "default.yaml").read_text()))
    assert keys == set(BaseConfig.model_fields) - {"task"}


@pytest.mark.parametrize("task_name", ["segment", "depth", "classify"])
def test_task_overlay_is_the_single_source_of_its_keys(task_name):
    """The overlay holds every key the task adds (and may change engine defaults); the merged YAML is
    exactly the task config's fields; `TASK cfg` prints both files."""
    from visionlab.cfg import BaseConfig, config_text
    from visionlab.tasks.base import get_task, task_names

    if task_name not in task_names():
        pytest.skip(f"task {task_name} not registered")
    cls = get_task(task_name).config_cls
    overlay = set(yaml.safe_load((CFG_DIR / f"{task_name}.yaml").read_text()))
    own = set(cls.model_fields) - set(BaseConfig.model_fields)
    assert own <= overlay, f"keys of {cls.__name__} missing from {task_name}.yaml: {own - overlay}"
    assert overlay <= set(cls.model_fields)
    text = config_text(task_name)
    assert "lr:" in text and all(f"{k}:" in text for k in own)


# ---------------------------------------------------------------- parse_overrides


def test_parse_overrides_scalar_types():
    out = parse_overrides(["epochs=3", "lr=0.0005", "amp=false", "cache=true", "encoder=null", "optimizer=sgd"])
    assert out == {"epochs": 3, "lr": 0.0005, "amp": False, "cache": True, "encoder": None, "optimizer": "sgd"}
    assert type(out["epochs"]) is int
    assert type(out["lr"]) is float
    assert type(out["amp"]) is bool


def test_parse_overrides_lists_and_empty_value():
    out = parse_overrides(["imgsz=[96,128]", "scale=[0.75, 1.25]", "mlflow_uri="])
    assert out == {"imgsz": [96, 128], "scale": [0.75, 1.25], "mlflow_uri": None}


def test_parse_overrides_key_normalisation():
    assert parse_overrides(["--warmup-epochs=2", " epochs =4"]) == {"warmup_epochs": 2, "epochs": 4}


@pytest.mark.parametrize(
    "arg, key, value",
    [
        ("data=camvid:/x/y", "data", "camvid:/x/y"),
        ("data=cityscapes:/data/cs", "data", "cityscapes:/data/cs"),
        ("model=runs/segment/train/weights/best.safetensors", "model", "runs/segment/train/weights/best.safetensors"),
        ("model=unet_mini", "model", "unet_mini"),
        ("source=123", "source", "123"),  # YAML would read an int
        ("name=2024", "name", "2024"),
        ("project=true", "project", "true"),  # YAML would read a bool
        ("pretrained=/w/resnet18.pth", "pretrained", "/w/resnet18.pth"),
    ],
)
def test_parse_overrides_specs_and_paths_stay_strings(arg, key, value):
    out = parse_overrides([arg])
    assert out == {key: value}
    assert type(out[key]) is str


def test_parse_overrides_null_for_string_keys_is_none():
    assert parse_overrides(["pretrained=null", "source=null"]) == {"pretrained": None, "source": None}


def test_parse_overrides_rejects_non_key_value():
    with pytest.raises(ConfigError, match="'epochs' is not key=value"):
        parse_overrides(["epochs"])


def test_scientific_float_reaches_config_as_float():
    # PyYAML (YAML 1.1) reads '1e-3' as a string; pydantic must still turn it into the float 0.001
    assert build(parse_overrides(["lr=1e-3"])).lr == pytest.approx(0.001)


# ---------------------------------------------------------------- precedence


def test_precedence_default_lt_cfg_file_lt_overrides(tmp_path):
    cfg_file = write_yaml(tmp_path / "my.yaml", {"epochs": 20, "batch": 4, "lr": 0.01})
    cfg = build({"cfg": str(cfg_file), "epochs": 3})
    assert cfg.epochs == 3  # override beats cfg file
    assert cfg.batch == 4  # cfg file beats default (8)
    assert cfg.lr == pytest.approx(0.01)
    assert cfg.weight_decay == pytest.approx(0.0001)  # untouched default
    assert not hasattr(cfg, "cfg")


def test_cfg_file_from_parsed_command_line(tmp_path):
    cfg_file = write_yaml(tmp_path / "my.yaml", {"imgsz": [64, 96], "loss": "focal"})
    cfg = build(parse_overrides([f"cfg={cfg_file}", "loss=dice"]))
    assert cfg.imgsz == (64, 96)
    assert cfg.loss == "dice"


def test_task_is_forced():
    assert build({"epochs": 2}).task == "segment"


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("bad, suggestion", [("epoch", "epochs"), ("lr0", "lr"), ("optimiser", "optimizer"),
                                             ("imgsize", "imgsz")])
def test_unknown_key_names_key_and_closest(bad, suggestion):
    with pytest.raises(ConfigError) as e:
        build({bad: 1})
    msg = str(e.value)
    assert f"'{bad}'" in msg
    assert "settings given" in msg
    assert f"did you mean '{suggestion}'?" in msg


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        build({"zzzzzzzz": 1})
    msg = str(e.value)
    assert "'zzzzzzzz'" in msg
    assert "valid keys:" in msg and "epochs" in msg


def test_unknown_key_in_cfg_file_names_file(tmp_path):
    cfg_file = write_yaml(tmp_path / "mine.yaml", {"epochs": 2, "epoch": 5})
    with pytest.raises(ConfigError) as e:
        build({"cfg": str(cfg_file)})
    msg = str(e.value)
    assert "'epoch'" in msg
    assert str(cfg_file) in msg
    assert "did you mean 'epochs'?" in msg


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("imgsz", 4, "too small"),
        ("imgsz", [4, 64], "too small"),
        ("optimizer", "lbfgs", "lbfgs"),
        ("loss", "xyz", "xyz"),
        ("fraction", 0, "fraction must be in (0, 1]"),
        ("fraction", 1.5, "fraction must be in (0, 1]"),
        ("epochs", 0, ">= 1"),
        ("batch", 0, ">= 1"),
        ("lr", "abc", "abc"),
    ],
)
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        build({key: value})
    msg = str(e.value)
    assert msg.startswith(f"invalid value for '{key}'")
    assert fragment in msg


def test_bad_value_in_cfg_file(tmp_path):
    cfg_file = write_yaml(tmp_path / "bad.yaml", {"optimizer": "lbfgs"})
    with pytest.raises(ConfigError, match="invalid value for 'optimizer'"):
        build({"cfg": str(cfg_file)})


def test_optimizer_is_lowercased():
    assert build({"optimizer": "AdamW"}).optimizer == "adamw"


# ---------------------------------------------------------------- imgsz forms


@pytest.mark.parametrize(
    "value, expected",
    [(128, (128, 128)), ("96x160", (96, 160)), ([96, 128], (96, 128)), (32, (32, 32))],
)
def test_imgsz_forms(value, expected):
    assert build({"imgsz": value}).imgsz == expected


def test_imgsz_string_from_command_line():
    assert build(parse_overrides(["imgsz=96x160"])).imgsz == (96, 160)


# ---------------------------------------------------------------- cfg file problems


def test_missing_cfg_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "missing.yaml"
    with pytest.raises(ConfigError) as e:
        build({"cfg": str(missing)})
    assert str(missing) in str(e.value)
    assert "not found" in str(e.value)


def test_cfg_file_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build({"cfg": str(path)})


def test_cfg_file_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        build({"cfg": str(path)})
    assert str(path) in str(e.value) and "invalid YAML" in str(e.value)


def test_empty_cfg_file_keeps_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert build({"cfg": str(path)}).epochs == 10


@pytest.mark.parametrize("recipe,task", [("camvid_recipe", "segment"), ("camvid_recipe_hires", "segment"),
                                         ("cifar10_recipe", "classify"), ("mnist_recipe", "classify")])
def test_benchmark_recipes_are_valid_configs(recipe: str, task: str):
    # the recipes the README and docs/benchmarks.md quote must load as they are (model names, keys, values)
    from visionlab.models.registry import list_models
    from visionlab.tasks.base import get_task

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{recipe}.yaml"
    cfg = build_config(get_task(task).config_cls, task, {"cfg": str(path)})
    assert cfg.model in list_models(task)
    assert cfg.epochs == yaml.safe_load(path.read_text())["epochs"]


@pytest.mark.parametrize("task", ["segment", "depth", "classify"])
def test_printed_config_is_the_yaml_it_documents(task, tmp_path):
    """`visionlab TASK cfg > my.yaml` then `cfg=my.yaml`: the printed text is never re-wrapped to a terminal width."""
    from conftest import run_cli

    code, out = run_cli(task, "cfg")
    assert code == 0, out
    path = tmp_path / "my.yaml"
    path.write_text(out)
    assert read_yaml(path) == default_config(task)


def test_paths_from_the_python_api_are_taken_as_strings(tmp_path):
    cfg = build(parse_overrides([]) | {"project": tmp_path / "runs", "data": tmp_path})
    assert cfg.project == str(tmp_path / "runs") and cfg.data == str(tmp_path)
