"""The Streamlit dashboard through streamlit.testing's AppTest, against a real API (uvicorn in a thread on
a free loopback port): the model list, a dataset image with its ground truth, the API's pictures, legend
and chart, an API that is down, and the runs view."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from test_serve import make_run  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "visionlab" / "dashboard" / "app.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dash_runs")
    make_run(root / "segment" / "seg", "segment", "unet_mini", {"num_classes": 8}, metrics={"miou": 0.5})
    make_run(root / "classify" / "cls", "classify", "small_cnn",
             {"num_classes": 3, "in_channels": 3, "width": 8, "classes": ["cat", "dog", "car"]},
             metrics={"accuracy": 0.7})
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 200, 30)).save(root / "segment" / "seg" / "curves.png")
    return root


@pytest.fixture(scope="module")
def api_url(runs_root: Path):
    import uvicorn

    from visionlab.serve.app import create_app

    app = create_app([str(runs_root / "segment" / "seg"), str(runs_root / "classify" / "cls")])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def dashboard(monkeypatch, api: str, runs: Path | str = "runs") -> AppTest:
    monkeypatch.setenv("VISIONLAB_DASHBOARD_API", api)
    monkeypatch.setenv("VISIONLAB_DASHBOARD_DATA", "synthetic")
    monkeypatch.setenv("VISIONLAB_DASHBOARD_RUNS", str(runs))
    return AppTest.from_file(APP, default_timeout=120)


def captions(at: AppTest) -> list[str]:
    return [c for image in at.image for c in image.captions]


def test_predict_view_segment(monkeypatch, api_url):
    at = dashboard(monkeypatch, api_url).run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].options == ["seg (segment)", "cls (classify)"]
    from visionlab.cfg import default_config

    ids = at.sidebar.selectbox[2]  # every synthetic val scene, by ID
    assert ids.label == "image ID" and len(ids.options) == default_config("segment")["synthetic_val"]
    assert ids.options[1] == "1: scene_1000001"
    assert captions(at) == ["image", "ground truth", "predicted mask", "overlay"]
    legend = " ".join(m.value for m in at.markdown)
    assert "#dc143c" in legend and "human" in legend  # the category legend with Cityscapes colours
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")  # the class-distribution chart


def test_predict_view_classify_shows_topk_bars(monkeypatch, api_url):
    at = dashboard(monkeypatch, api_url).run()
    at.sidebar.selectbox[0].select("cls").run()
    assert not at.exception, at.exception
    # synthetic data is no classification dataset: the page says so and offers the upload instead
    assert at.error and "dataset synthetic" in at.error[0].value
    at.sidebar.radio[1].set_value("upload").run()
    assert at.info and "upload an image" in at.info[0].value


def test_api_down_is_one_message(monkeypatch):
    at = dashboard(monkeypatch, f"http://127.0.0.1:{free_port()}").run()
    assert not at.exception
    assert "cannot reach the API" in at.error[0].value


def test_runs_view(monkeypatch, api_url, runs_root):
    at = dashboard(monkeypatch, api_url, runs_root).run()
    at.sidebar.radio[0].set_value("runs").run()
    assert not at.exception, at.exception
    frame = at.dataframe[0].value
    assert sorted(Path(r).name for r in frame["run"]) == ["cls", "seg"]
    assert set(frame["task"]) == {"segment", "classify"}
    at.selectbox[0].select(str(runs_root / "segment" / "seg")).run()
    assert captions(at) == ["curves.png"]
    assert at.multiselect[0].value == ["train/loss", "val/loss"]


def test_display_size_and_response_split():
    from visionlab.dashboard.client import display_size, split_response
    from visionlab.tasks.base import png_base64

    assert display_size([64, 96]) == (256, 384) and display_size([512, 512]) == (512, 512)
    pictures, values, title, legend, rest = split_response(
        {"model": "m", "images": {"mask": png_base64(np.full((2, 3, 3), 9, np.uint8))},
         "chart": {"title": "t", "values": {"a": 0.5}}, "legend": {"a": "#000000"}})
    assert pictures["mask"].shape == (2, 3, 3) and values == {"a": 0.5} and title == "t"
    assert legend == {"a": "#000000"} and rest == {"model": "m"}
