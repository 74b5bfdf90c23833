"""Settings of ``visionlab serve`` and their ``key=value`` command line."""

from __future__ import annotations

from dataclasses import dataclass, field

from visionlab.cfg import ConfigError, check_keys
from visionlab.serve.imaging import UploadLimits


@dataclass
class ServeSettings:
    api_key: str | None = None  # X-API-Key required on /models, /predict and /metrics when set
    limits: UploadLimits = field(default_factory=UploadLimits)
    max_batch: int = 8  # images per model call
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_pending: int = 32  # images admitted per model (queued + running); beyond: 503 + Retry-After
    retry_after_s: int = 1
    device: str = "cpu"


# key -> (type, help); model= may repeat
SERVE_KEYS: dict[str, tuple[type, str]] = {
    "model": (str, "PATH or NAME=PATH: run folder, checkpoint or .onnx file (repeat for several models)"),
    "host": (str, "address to listen on (default 127.0.0.1; 0.0.0.0 in a container)"),
    "port": (int, "port (default 8000)"),
    "api_key": (str, "require this X-API-Key header on /models, /predict and /metrics"),
    "device": (str, "cpu | cuda | cuda:N | auto"),
    "max_batch": (int, "images per model call (micro-batching of concurrent requests)"),
    "max_wait_ms": (float, "how long a batch waits for more images"),
    "max_pending": (int, "images admitted per model before answering 503"),
    "max_mb": (float, "upload size limit in MiB"),
    "max_pixels": (int, "image size limit in pixels, checked from the header before decoding"),
    "log_level": (str, "debug | info | warning"),
}


def parse_serve_args(args: list[str]) -> tuple[list[str], str, int, ServeSettings, str]:
    """``key=value`` words -> (model references, host, port, settings, log level). ConfigError names the
    key at fault."""
    values: dict[str, object] = {}
    models: list[str] = []
    for word in args:
        if "=" not in word:
            raise ConfigError(f"'{word}': expected key=value, e.g. model=runs/segment/exp port=8000")
        key, raw = word.split("=", 1)
        check_keys([key], list(SERVE_KEYS), "the command line")
        if key == "model":
            models.append(raw)
            continue
        kind = SERVE_KEYS[key][0]
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw}: expected {'an integer' if kind is int else 'a number'}") from None
        allowed = kind is str or (value >= 0 if key == "max_wait_ms" else value > 0)
        if not allowed:
            raise ConfigError(f"{key}={raw}: must be {'>= 0' if key == 'max_wait_ms' else 'positive'}")
        values[key] = value
    if not models:
        raise ConfigError("serve needs model=PATH (a run folder, checkpoint or .onnx file); repeat for several")
    defaults = UploadLimits()
    max_mb = float(values.pop("max_mb", defaults.max_bytes / 2**20))
    limits = UploadLimits(max_bytes=round(max_mb * 2**20),
                          max_pixels=int(values.pop("max_pixels", defaults.max_pixels)))
    host, port = str(values.pop("host", "127.0.0.1")), int(values.pop("port", 8000))
    if port > 65535:
        raise ConfigError(f"port={port}: must be 1..65535")
    log_level = str(values.pop("log_level", "info")).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level={log_level}: expected debug, info, warning or error")
    if "device" in values:  # checked here: an unusable device is one line, not a traceback from the first load
        from visionlab.utils.runtime import EnvironmentProblem, select_device

        try:
            values["device"] = str(select_device(str(values["device"])))
        except EnvironmentProblem as e:
            raise ConfigError(str(e)) from None
    if not values.get("api_key"):
        values.pop("api_key", None)  # api_key= (empty, e.g. from an unset compose variable): no key
    return models, host, port, ServeSettings(limits=limits, **values), log_level  # type: ignore[arg-type]
