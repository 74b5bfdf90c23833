"""What the dashboard needs besides Streamlit: the API over HTTP, dataset samples to pick from (read
locally for display; predictions always come from the API) and the run folders' files. No task names
appear here: samples come from ``Task.build_dataset``, ground-truth pictures from ``Task.target_picture``,
and the API's JSON answers are drawn as they are (``images``, ``chart``, ``legend``)."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class ApiProblem(RuntimeError):
    """The API could not be reached or refused a request (the message says which and why)."""


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0):
        import httpx

        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ApiProblem(f"cannot reach the API at {self.base_url} ({type(e).__name__}: {e}); start it with "
                             "`visionlab serve model=...`") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:300]
            raise ApiProblem(f"{method} {path}: {response.status_code} {detail}")
        return response.json()

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")

    def predict(self, model: str, image: np.ndarray, topk: int = 5) -> dict[str, Any]:
        """JSON prediction with pictures for one HxWx3 uint8 image (sent as PNG)."""
        from visionlab.tasks.base import png_bytes

        files = {"file": ("image.png", png_bytes(image), "image/png")}
        return self._call("POST", f"/predict/{model}", params={"format": "json", "overlay": "true", "topk": topk},
                          files=files)


def decode_png_base64(text: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def split_response(answer: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, float], str, dict[str, str], dict]:
    """An API JSON answer -> (pictures by caption, chart values, chart title, legend, the remaining fields)."""
    images = {name: decode_png_base64(b64) for name, b64 in (answer.get("images") or {}).items()}
    chart = answer.get("chart") or {}
    rest = {k: v for k, v in answer.items() if k not in ("images", "chart", "legend")}
    return images, dict(chart.get("values") or {}), str(chart.get("title", "")), dict(answer.get("legend") or {}), rest


# ----------------------------------------------------------------------------- dataset samples


@dataclass
class Samples:
    """The images of one dataset split, for the dashboard's picker."""

    task: Any
    dataset: Any

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        name_of = getattr(self.dataset, "name_of", None)
        return str(name_of(index)) if callable(name_of) else f"#{index}"

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(HxWx3 uint8 image, ground-truth picture or None)."""
        sample = self.dataset[index]
        image = np.ascontiguousarray(np.asarray(sample["image"]).transpose(1, 2, 0))
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return image, self.task.target_picture(sample)


def display_size(input_size: list[int], long_side: int = 384) -> tuple[int, int]:
    """The model's input size scaled up so the longer side is about ``long_side`` (pictures worth looking at)."""
    h, w = input_size
    k = max(1, math.ceil(long_side / max(h, w)))
    return h * k, w * k


def load_samples(task_name: str, spec: str, split: str, size: tuple[int, int]) -> Samples:
    """``spec`` read through the task's own data layouts (DataError / ConfigError for a bad spec)."""
    from visionlab.cfg import build_config
    from visionlab.tasks.base import get_task

    task = get_task(task_name)
    cfg = build_config(task.config_cls, task.name, {"data": spec, "split": split, "imgsz": list(size),
                                                    "cache": False, "workers": 0, "mlflow": False})
    return Samples(task, task.build_dataset(cfg, split, train=False))


# ----------------------------------------------------------------------------- runs


def run_table(root: str) -> list[dict[str, Any]]:
    """One row per run folder under ``root`` (the ``visionlab compare`` records)."""
    from visionlab.engine.compare import compare

    try:
        columns, records = compare([root], None)
    except FileNotFoundError:
        return []
    return [{c: r.get(c) for c in columns} for r in records]


def run_pictures(run: str | Path) -> dict[str, Path]:
    """The plots a run folder holds (curves, confusion matrix, predictions, bench plots ...), by file name."""
    run = Path(run)
    return {p.relative_to(run).as_posix(): p for p in sorted(run.rglob("*.png"))
            if "weights" not in p.parts and p.stat().st_size < 20 * 2**20}


def run_curves(run: str | Path) -> Any:
    """metrics.csv as a pandas DataFrame indexed by epoch (None without one)."""
    import pandas as pd

    path = Path(run) / "metrics.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame.set_index("epoch") if "epoch" in frame.columns else frame
