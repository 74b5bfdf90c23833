"""Model registry by decorator (timm style): ``@register_model`` on a builder, ``create_model(name)``.

Builders construct architecture only; pretrained weights are applied separately
(visionlab.models.pretrained), so a checkpoint alone can rebuild its model from (name, kwargs).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from visionlab.cfg import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TASK_OF: dict[str, str] = {}


def register_model(task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS and (_MODELS[fn.__name__].__module__, _MODELS[fn.__name__].__qualname__) != (
                fn.__module__, fn.__qualname__):  # the same builder re-imported (importlib.reload) is fine
            raise ValueError(f"model name '{fn.__name__}' is already registered (task {_TASK_OF[fn.__name__]}, "
                             f"{_MODELS[fn.__name__].__module__}); pick another name")
        _MODELS[fn.__name__] = fn
        _TASK_OF[fn.__name__] = task
        return fn

    return wrap


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The registered builder function (e.g. to inspect which keyword arguments a model takes)."""
    if name not in _MODELS:
        create_model(name)  # raises the helpful unknown-model error
    return _MODELS[name]


def list_models(task: str | None = None) -> list[str]:
    return sorted(n for n in _MODELS if task is None or _TASK_OF[n] == task)


def create_model(name: str, task: str | None = None, **kwargs: Any) -> nn.Module:
    """Build registered model ``name``; with ``task``, a model of another task is refused in one line."""
    if task is not None and name in _MODELS and _TASK_OF[name] != task:
        raise ConfigError(f"model={name} is a {_TASK_OF[name]} model, not a {task} one; {task} models: "
                          f"{', '.join(list_models(task))} (or a {task} checkpoint)")
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown model '{name}' (and no such checkpoint file).{hint} Known models: {', '.join(list_models())}"
        )
    return _MODELS[name](**kwargs)
