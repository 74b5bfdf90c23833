"""Configs: ``default.yaml`` (the engine's keys) plus one overlay per task (``segment.yaml`` ...: the task's
own keys and the engine defaults it changes), validated by the task's pydantic model.

Precedence: default.yaml < task overlay < checkpoint (val/predict/bench inherit what the task lists) <
``cfg=my.yaml`` < ``key=value`` overrides. Unknown keys are an error that names the key and the closest
valid one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

CFG_DIR = Path(__file__).parent
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("cosine", "onecycle", "constant")


class ConfigError(ValueError):
    """A user-facing configuration problem (unknown key, bad value, unreadable file)."""


def as_size(v: Any) -> Any:
    """128 -> (128, 128); "96x160" (or "96X160") -> (96, 160); anything else unchanged for validation."""
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, str) and "x" in v.lower():
        return tuple(int(p) for p in v.lower().split("x"))
    return v


# checks shared by several task configs: `_x = field_validator("key", ...)(check)` in the config class
def probability(v: float) -> float:
    if not 0 <= v <= 1:
        raise ValueError("must be between 0 and 1")
    return v


def scale_range(v: tuple[float, float]) -> tuple[float, float]:
    if not 0 < v[0] <= v[1]:
        raise ValueError("scale must be [low, high] with 0 < low <= high, e.g. [0.5, 1.5]")
    return v


def tta_scales(v: Any) -> tuple[float, ...]:
    """``tta_scales``: one scale or a list of them, each in [0.25, 4]."""
    scales = (v,) if isinstance(v, (int, float)) else tuple(v or ())
    if not scales or not all(isinstance(s, (int, float)) and 0.25 <= s <= 4 for s in scales):
        raise ValueError(f"tta_scales={v}: expected a list of scales between 0.25 and 4, e.g. [1.0, 1.25]")
    return tuple(float(s) for s in scales)


def one_of(key: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    """A check that ``key`` is one of ``choices`` (its error lists them)."""
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"{key} must be one of {', '.join(choices)}")
        return v

    return check


def scene_count(v: int) -> int:
    if v < 1:
        raise ValueError("need at least 1 scene")
    return v


class BaseConfig(BaseModel):
    """Keys shared by every task. No defaults here on purpose: the task YAML holds them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    task: str
    data: str
    split: str
    imgsz: tuple[int, int]
    fraction: float
    cache: bool
    workers: int
    augment: bool
    overfit: int
    model: str
    pretrained: str | None
    teacher: str | None
    epochs: int
    batch: int
    optimizer: str
    lr: float
    lrf: float
    schedule: str
    encoder_lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: float
    grad_clip: float
    ema: float
    patience: int
    amp: bool
    channels_last: bool
    val: bool
    resume: bool
    device: str
    seed: int
    deterministic: bool
    project: str
    name: str
    exist_ok: bool
    plots: bool
    threads: int
    mlflow: bool
    mlflow_uri: str | None
    tensorboard: bool
    source: str | None
    keep_aspect: bool

    @field_validator("imgsz", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return as_size(v)

    @field_validator("imgsz")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError(f"imgsz {list(v)} is too small: need at least 8 pixels per side")
        return v

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        if v.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer '{v}' is not one of {', '.join(OPTIMIZERS)}")
        return v.lower()

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if v not in SCHEDULES:
            raise ValueError(f"schedule '{v}' is not one of {', '.join(SCHEDULES)}")
        return v

    @field_validator("ema")
    @classmethod
    def _ema(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("ema is a decay in [0, 1), e.g. 0.999 (0 = off)")
        return v

    @field_validator("encoder_lr")
    @classmethod
    def _encoder_lr(cls, v: float) -> float:
        if v < 0:
            raise ValueError("encoder_lr is a multiplier of lr and must be >= 0 (0 freezes the encoder)")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not v >= 0:  # 0 is allowed: only BatchNorm statistics move (an untrained baseline)
            raise ValueError("lr must be >= 0 (the peak learning rate, e.g. 0.001)")
        return v

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("momentum (adam's beta1) must be in [0, 1)")
        return v

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("fraction must be in (0, 1]")
        return v

    @field_validator("epochs", "batch")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("workers", "threads", "patience", "overfit", "lrf", "weight_decay", "warmup_epochs", "grad_clip")
    @classmethod
    def _not_negative(cls, v: float) -> float:
        if not v >= 0:  # also refuses nan
            raise ValueError("must be >= 0")
        return v


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["epochs=3", "imgsz=[128,256]"]`` -> ``{"epochs": 3, "imgsz": [128, 256]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument '{arg}' is not key=value (e.g. epochs=10)")
        key, raw = arg.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        # keep data specs and paths as strings even if YAML reads them otherwise
        keep_text = key in ("data", "model", "source", "name", "project", "pretrained", "teacher") and value is not None
        out[key] = raw if keep_text else value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value")
    return loaded


def default_config(task: str) -> dict[str, Any]:
    """default.yaml overlaid with the task's YAML (which may also change engine defaults)."""
    values = read_yaml(CFG_DIR / "default.yaml")
    values.update(read_yaml(CFG_DIR / f"{task}.yaml"))
    return values


def config_text(task: str) -> str:
    """What ``visionlab TASK cfg`` prints: both files, engine keys first, then the task's overlay."""
    return ((CFG_DIR / "default.yaml").read_text(encoding="utf-8") + f"\n# ===== {task}.yaml (overlay) =====\n"
            + (CFG_DIR / f"{task}.yaml").read_text(encoding="utf-8"))


def check_keys(keys: list[str], valid: list[str], where: str) -> None:
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
            raise ConfigError(f"unknown setting '{key}' in {where}{hint}")


def build_config(cls: type[BaseConfig], task: str, overrides: dict[str, Any],
                 inherited: dict[str, Any] | None = None) -> BaseConfig:
    """Merge defaults < ``inherited`` (a checkpoint's settings) < an optional ``cfg=`` file < overrides,
    then validate."""
    values = default_config(task)
    valid = list(values) + ["cfg"]
    # a Path from the Python API (visionlab.train returns one) is as good as its string
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    check_keys(list(overrides), valid, "the settings given (key=value / keyword arguments)")
    values.update(inherited or {})
    if cfg_file := overrides.pop("cfg", None):
        user = read_yaml(cfg_file)
        user.pop("task", None)  # a run's own config.yaml works as cfg=
        check_keys(list(user), valid, str(cfg_file))
        values.update(user)
    values.update(overrides)
    values["task"] = task
    return validate(cls, values)


def validate(cls: type[BaseConfig], values: dict[str, Any]) -> BaseConfig:
    try:
        return cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"invalid value for '{key}': {err['msg']} (got {err.get('input')!r})") from None
