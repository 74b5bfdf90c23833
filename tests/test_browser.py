"""End to end in a real headless browser: `visionlab serve` and `visionlab dashboard` as subprocesses on free
loopback ports, Debian's chromium driven by Playwright: pick a model and an image, wait for the
prediction, and check the screenshot of the predicted mask holds the Cityscapes category colours."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from test_serve import make_run

CHROMIUM = os.environ.get("VISIONLAB_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:5]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} not up after {timeout:.0f} s: {log.read_text()[-2000:]}")


def start(args: list[str], log: Path) -> subprocess.Popen:
    """A process in its own session, so stopping it also stops what it started (streamlit under the CLI)."""
    env = {**os.environ, "VISIONLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "visionlab", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test created for this process
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_dashboard_in_a_real_browser(tmp_path: Path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    from visionlab.data.categories import CATEGORY_COLOURS

    run = make_run(tmp_path / "runs" / "segment" / "roads", "segment", "unet_mini", {"num_classes": 8})
    api_port, ui_port = free_port(), free_port()
    api = start(["serve", f"model={run}", f"port={api_port}"], tmp_path / "api.log")
    ui = start(["dashboard", f"api=http://127.0.0.1:{api_port}", "data=synthetic", f"runs={tmp_path / 'runs'}",
                f"port={ui_port}"], tmp_path / "ui.log")
    try:
        wait_for(f"http://127.0.0.1:{api_port}/ready", api, 120, tmp_path / "api.log")
        wait_for(f"http://127.0.0.1:{ui_port}/_stcore/health", ui, 120, tmp_path / "ui.log")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{ui_port}", timeout=60_000)
            sidebar = page.get_by_test_id("stSidebar")
            # the model: open its select box and choose it (the only one, but chosen as a person would)
            sidebar.get_by_test_id("stSelectbox").nth(0).click()
            page.get_by_role("option", name="roads (segment)").click()
            # an image by ID
            sidebar.get_by_test_id("stSelectbox").nth(2).click()
            page.get_by_role("option", name="3: scene_1000003").click()
            page.get_by_text("roads on scene_1000003").wait_for(timeout=90_000)
            figure = page.get_by_test_id("stImage").filter(has_text="predicted mask")
            figure.wait_for(timeout=60_000)
            page.locator("[data-testid*='VegaLiteChart'] canvas, [data-testid*='VegaLiteChart'] svg").first.wait_for(
                timeout=60_000)  # the class-distribution chart
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            shot = np.asarray(Image.open(io.BytesIO(figure.locator("img").screenshot())).convert("RGB"))
            browser.close()
    finally:
        stop(ui)
        stop(api)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    colours = CATEGORY_COLOURS[1:]  # void is black: too easy to find by accident
    hits = (shot[:, :, None, :] == colours[None, None]).all(-1)  # H x W x 7
    share = hits.any(-1).mean()
    assert share > 0.5, f"only {share:.0%} of the predicted-mask pixels have category colours"
