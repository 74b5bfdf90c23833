"""`visionlab serve`: endpoints, per-task responses against in-process inference, content negotiation, a
corpus of bad uploads (each with its 4xx, the server healthy after), odd-but-valid images, API key,
request ids, Prometheus metrics, admission control (503) and the micro-batcher."""

from __future__ import annotations

import io
import json
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli

from visionlab.data.categories import colorize
from visionlab.serve.app import ApiError, create_app, negotiate
from visionlab.serve.batching import MicroBatcher, QueueFull
from visionlab.serve.imaging import UploadLimits
from visionlab.serve.models import parse_model_refs
from visionlab.serve.settings import ServeSettings, parse_serve_args

LIMITS = UploadLimits(max_bytes=300_000, max_pixels=1_000_000)


# ----------------------------------------------------------------------------- helpers (used by the other serve tests)


def make_run(run_dir: Path, task: str, arch: str, kwargs: dict, imgsz: int = 64, metrics: dict | None = None,
             seed: int = 0) -> Path:
    """A run folder with random weights (weights/best + last, config.yaml, results.json, metrics.csv)."""
    import yaml

    import visionlab.tasks  # noqa: F401  (registers every model)
    from visionlab.models.registry import create_model
    from visionlab.utils.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(arch, **kwargs)
    with torch.no_grad():  # random heads predict one class everywhere; larger weights make outputs vary
        for p in model.parameters():
            p.mul_(3.0)
    meta = {"task": task, "arch": arch, "arch_kwargs": kwargs, "imgsz": [imgsz, imgsz],
            "params": sum(p.numel() for p in model.parameters()), "config": {"imgsz": [imgsz, imgsz]}}
    for name in ("best", "last"):
        save_checkpoint(run_dir / "weights" / f"{name}.safetensors", model.state_dict(), meta)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"task": task, "model": arch, "data": "synthetic",
                                                         "split": "val", "epochs": 2}))
    metrics = metrics or {}
    (run_dir / "results.json").write_text(json.dumps({"val": metrics, "model": arch, "params": meta["params"],
                                                      "train_time_s": 6.0, "inference_ms": {"p50": 1.5}}))
    (run_dir / "metrics.csv").write_text("epoch,train/loss,val/loss\n1,2.0,1.9\n2,1.5,1.4\n")
    return run_dir


def encode(arr: np.ndarray | Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def scene(h: int = 48, w: int = 80) -> np.ndarray:
    """A deterministic image with structure (gradients + blocks) so predictions are not uniform."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, ((x // 8 + y // 8) % 2) * 255], -1)
    return img.astype(np.uint8)


def upload(client, model: str, data: bytes, name: str = "img.png", ctype: str = "image/png", **params):
    return client.post(f"/predict/{model}", params=params, files={"file": (name, data, ctype)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_runs")
    return {
        "seg": make_run(root / "seg", "segment", "unet_mini", {"num_classes": 8}, metrics={"miou": 0.42}),
        "depth": make_run(root / "depth", "depth", "depth_cnn", {"encoder": "resnet18", "width": 16}),
        "cls": make_run(root / "cls", "classify", "small_cnn",
                        {"num_classes": 3, "in_channels": 3, "width": 8, "classes": ["cat", "dog", "car"]}),
    }


@pytest.fixture(scope="module")
def app(runs):
    return create_app([str(runs["seg"]), f"deep={runs['depth'] / 'weights' / 'best.safetensors'}", str(runs["cls"])],
                      ServeSettings(limits=LIMITS, max_wait_ms=2))


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def in_process(app, name: str, image: np.ndarray):
    served = app.state.serve.models[name]
    return served.task.infer(served.model, [image], served.imgsz)[0]


# ----------------------------------------------------------------------------- endpoints


def test_info_endpoints(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "models": ["cls", "deep", "seg"]}
    assert client.get("/").json()["models"] == ["cls", "deep", "seg"]
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["seg"]["task"] == "segment" and models["seg"]["labels"][1] == "flat"
    assert models["seg"]["metrics"] == {"miou": 0.42}  # from the run's results.json
    assert models["seg"]["formats"] == {"png": "image/png", "json": "application/json"}
    assert models["deep"]["task"] == "depth" and models["deep"]["input_multiple"] == 32
    assert models["cls"]["labels"] == ["cat", "dog", "car"] and models["cls"]["input_size"] == [64, 64]
    assert client.get("/models/nope").status_code == 404
    assert "/predict/{name}" in client.get("/openapi.json").json()["paths"]


def test_segment_png_and_json_match_in_process_inference(app, client):
    image = scene()
    expected = in_process(app, "seg", image)
    assert len(np.unique(expected)) > 1  # the check below means something
    r = upload(client, "seg", encode(image))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected)

    body = upload(client, "seg", encode(image), format="json", overlay="true").json()
    counts = np.bincount(expected.ravel(), minlength=8)
    assert body["shares"]["flat"] == pytest.approx(counts[1] / expected.size, abs=1e-6)
    assert sum(body["shares"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["legend"]["human"] == "#dc143c"  # Cityscapes colour of the human category
    from visionlab.dashboard.client import decode_png_base64

    np.testing.assert_array_equal(decode_png_base64(body["images"]["predicted mask"]), colorize(expected))
    assert "images" not in upload(client, "seg", encode(image), format="json").json()


def test_depth_formats(app, client):
    from visionlab.tasks.depth import read_disparity_png16

    image = scene()
    expected = in_process(app, "deep", image)
    r = upload(client, "deep", encode(image))  # default: 16-bit PNG with its scale in a text chunk
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    decoded = read_disparity_png16(io.BytesIO(r.content))
    np.testing.assert_allclose(decoded, expected, atol=float(expected.max()) / 65535 + 1e-7)
    colour = np.asarray(Image.open(io.BytesIO(upload(client, "deep", encode(image), format="color").content)))
    assert colour.shape == (48, 80, 3)
    stats = upload(client, "deep", encode(image), format="json").json()["disparity"]
    assert stats["max"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert stats["mean"] == pytest.approx(float(expected.mean()), rel=1e-4)


def test_classify_topk(app, client):
    image = scene()
    probs = in_process(app, "cls", image).probs
    body = upload(client, "cls", encode(image), topk=2).json()
    order = np.argsort(-probs)
    assert [t["class"] for t in body["top"]] == [["cat", "dog", "car"][i] for i in order[:2]]
    assert body["top"][0]["prob"] == pytest.approx(float(probs[order[0]]), abs=1e-6)
    assert upload(client, "cls", encode(image), topk=0).status_code == 422


def test_onnx_model_is_served_like_a_checkpoint(runs, tmp_path):
    """Whatever load_model returns is served: here the ONNX Runtime wrapper of an exported model."""
    export = pytest.importorskip("visionlab.engine.export")
    from fastapi.testclient import TestClient

    from visionlab.engine.model_io import load_model
    from visionlab.engine.onnx_model import write_onnx_meta
    from visionlab.tasks.base import get_task

    model, meta = load_model(runs["seg"])
    path = export.export_onnx(model, tmp_path / "seg.onnx", [64, 64])
    write_onnx_meta(path, export.export_meta(get_task("segment"), meta, model, [64, 64]))
    c = TestClient(create_app([f"onx={path}"]))
    info = c.get("/models").json()[0]
    assert (info["name"], info["task"], info["input_size"]) == ("onx", "segment", [64, 64])
    image = scene()
    served = np.asarray(Image.open(io.BytesIO(upload(c, "onx", encode(image)).content)))
    expected = get_task("segment").infer(model, [image], (64, 64))[0]
    assert (served == expected).mean() > 0.99  # float rounding may flip a few argmax ties


def test_content_negotiation(client):
    image = encode(scene())
    accept = lambda a: client.post("/predict/seg", files={"file": ("a.png", image)}, headers={"Accept": a})  # noqa: E731
    assert accept("application/json").headers["content-type"] == "application/json"
    assert accept("image/*").headers["content-type"] == "image/png"
    assert accept("image/png;q=0.4, application/json").headers["content-type"] == "application/json"
    assert accept("text/csv").status_code == 406
    assert upload(client, "cls", image, format="png").status_code == 400
    formats = {"png16": "image/png", "color": "image/png", "json": "application/json"}
    assert negotiate(formats, None, "image/png", "m") == "png16"  # the default among equals
    assert negotiate(formats, "color", "application/json", "m") == "color"  # ?format= wins
    assert negotiate(formats, None, "*/*;q=0.1, application/json", "m") == "json"
    with pytest.raises(ApiError):
        negotiate(formats, None, "application/json;q=0", "m")
    assert negotiate(formats, None, "image/png;q=0, */*", "m") == "json"  # an explicit q=0 refuses PNG
    assert negotiate(formats, None, "image/*;q=0, image/png, */*;q=0.5", "m") == "png16"  # more specific wins


# ----------------------------------------------------------------------------- bad inputs


def _bad_corpus() -> list[tuple[str, bytes, str, int, str]]:
    good = encode(scene())
    bomb = bytearray(encode(np.zeros((10, 10), np.uint8)))
    bomb[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # IHDR says 100000x100000
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # with a valid chunk CRC
    big = bytearray(bomb)
    big[16:24] = (2000).to_bytes(4, "big") * 2  # 4 MP: under PIL's limit, over this server's 1 MP
    big[29:33] = zlib.crc32(bytes(big[12:29])).to_bytes(4, "big")
    jpeg = encode(scene(), "JPEG")
    return [
        ("empty file", b"", "a.png", 400, "empty"),
        ("text declared as PNG", b"hello, this is not an image", "a.png", 415, "unsupported_type"),
        ("HTML named .jpg", b"<html><body>hi</body></html>", "a.jpg", 415, "unsupported_type"),
        ("GIF (not accepted)", encode(scene(), "GIF"), "a.gif", 415, "unsupported_type"),
        ("truncated PNG", good[: len(good) // 2], "a.png", 422, "truncated"),
        ("corrupt JPEG data", jpeg[:200] + bytes(len(jpeg) - 200), "a.jpg", 422, "corrupt"),
        ("decompression bomb header", bytes(bomb), "a.png", 413, "too_many_pixels"),
        ("header over the server's pixel limit", bytes(big), "a.png", 413, "too_many_pixels"),
        ("file over the size limit", good[:8] + bytes(LIMITS.max_bytes), "a.png", 413, "too_large"),
        ("2x2 image", encode(np.zeros((2, 2, 3), np.uint8)), "a.png", 422, "too_small"),
    ]


@pytest.mark.parametrize("case", _bad_corpus(), ids=lambda c: c[0])
def test_bad_uploads_get_their_4xx(client, case):
    _, data, name, status, code = case
    r = upload(client, "seg", data, name)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["request_id"] == r.headers["x-request-id"] and body["detail"]


def test_bad_requests_and_health_after(client):
    assert client.post("/predict/seg").status_code == 422  # no file field
    assert client.post("/predict/seg", data={"image": "x"}).json()["code"] == "invalid_request"
    assert upload(client, "nope", encode(scene())).status_code == 404
    r = client.post("/predict/seg", content=b"x" * 10, headers={"content-length": str(10**9)})
    assert r.status_code == 413
    assert client.get("/health").status_code == 200
    assert upload(client, "seg", encode(scene())).status_code == 200


@pytest.mark.parametrize("kind", ["L", "RGBA", "I;16", "CMYK", "P"])
def test_odd_modes_are_converted(app, client, kind):
    rgb = scene()
    grey = (rgb.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    if kind == "L":
        data, same_as = encode(grey), np.repeat(grey[..., None], 3, 2)
    elif kind == "RGBA":
        data, same_as = encode(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])), rgb  # alpha dropped
    elif kind == "I;16":
        data = encode(grey.astype(np.uint16) * 257)  # 16-bit grey: 0..65535 -> 0..255
        same_as = np.repeat(grey[..., None], 3, 2)
    elif kind == "CMYK":
        cmyk = Image.fromarray(rgb).convert("CMYK")
        data, same_as = encode(cmyk, "TIFF"), np.asarray(cmyk.convert("RGB"))
    else:
        palette = Image.fromarray(rgb).convert("P")
        data, same_as = encode(palette), np.asarray(palette.convert("RGB"))
    r = upload(client, "seg", data)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), in_process(app, "seg", same_as))


def test_exif_rotation_is_applied(client):
    image = Image.fromarray(scene(40, 64))  # landscape pixels, EXIF says "rotate 90 degrees clockwise"
    exif = Image.Exif()
    exif[0x0112] = 6
    r = upload(client, "seg", encode(np.asarray(image), "JPEG", exif=exif.tobytes()), "a.jpg")
    assert np.asarray(Image.open(io.BytesIO(r.content))).shape == (64, 40)  # answered upright (portrait)


def test_memory_and_health_after_many_bad_inputs(client):
    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    corpus = _bad_corpus()
    for case in corpus:  # warm-up: allocator pools, lazily imported decoders
        upload(client, "seg", case[1], case[2])
    before = rss_mb()
    for _ in range(6):
        for case in corpus:
            assert upload(client, "seg", case[1], case[2]).status_code == case[3]
        assert upload(client, "seg", encode(scene())).status_code == 200
    assert rss_mb() - before < 40
    assert client.get("/health").status_code == 200


# ----------------------------------------------------------------------------- security, ids, metrics


def test_api_key(runs):
    from fastapi.testclient import TestClient

    c = TestClient(create_app([str(runs["seg"])], ServeSettings(api_key="s3cret")))
    assert c.get("/health").status_code == 200  # liveness stays open
    assert c.get("/models").status_code == 401
    assert c.get("/models", headers={"X-API-Key": "wrong"}).status_code == 403
    assert c.get("/metrics").status_code == 401
    r = c.post("/predict/seg", files={"file": ("a.png", encode(scene()))}, headers={"X-API-Key": "s3cret"})
    assert r.status_code == 200


def test_request_ids(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"] != "bad id"


def test_prometheus_metrics(runs):
    from fastapi.testclient import TestClient

    c = TestClient(create_app([str(runs["seg"])]))
    for _ in range(3):
        c.post("/predict/seg", files={"file": ("a.png", encode(scene()))})
    c.post("/predict/seg", files={"file": ("a.png", b"nope")})
    text = c.get("/metrics").text
    assert 'visionlab_requests_total{method="POST",route="/predict/{name}",status="200"} 3.0' in text
    assert 'visionlab_requests_total{method="POST",route="/predict/{name}",status="415"} 1.0' in text
    assert 'visionlab_request_seconds_count{route="/predict/{name}"} 4.0' in text
    assert 'visionlab_batch_size_count{model="seg"}' in text


def test_full_queue_answers_503_with_retry_after(runs):
    from fastapi.testclient import TestClient

    app = create_app([str(runs["seg"])], ServeSettings(max_pending=1))
    served = app.state.serve.models["seg"]
    gate = threading.Event()
    run = served.batcher.infer
    served.batcher.infer = lambda images: (gate.wait(10), run(images))[1]  # hold the only slot
    c = TestClient(app)
    first: list = []
    t = threading.Thread(target=lambda: first.append(c.post("/predict/seg", files={"file": ("a.png", encode(scene()))})))
    t.start()
    deadline = time.monotonic() + 10
    while served.batcher.pending < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = c.post("/predict/seg", files={"file": ("a.png", encode(scene()))})
    gate.set()
    t.join(10)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["code"] == "busy"
    assert first[0].status_code == 200
    # a refused upload gives its place back (it was admitted before being decoded)
    assert c.post("/predict/seg", files={"file": ("a.png", b"")}).status_code == 400
    assert c.post("/predict/seg", files={"file": ("a.png", b"not an image")}).status_code == 415
    assert served.batcher.pending == 0
    assert c.post("/predict/seg", files={"file": ("a.png", encode(scene()))}).status_code == 200


# ----------------------------------------------------------------------------- micro-batching


def test_micro_batcher_groups_concurrent_requests_and_survives_errors():
    sizes: list[int] = []

    def infer(images):
        sizes.append(len(images))
        if any(im[0] < 0 for im in images):
            raise ValueError("bad input")
        return [im * 2 for im in images]

    b = MicroBatcher(infer, max_batch=4, max_wait_ms=300, max_pending=6)
    futures = [b.submit(np.array([i])) for i in range(6)]
    with pytest.raises(QueueFull):
        b.submit(np.array([9]))
    assert [f.result(5)[0] for f in futures] == [0, 2, 4, 6, 8, 10]
    assert sizes == [4, 2]  # 4 at once, then the remaining 2 after the wait
    with pytest.raises(ValueError):
        b.submit(np.array([-1])).result(5)
    assert b.submit(np.array([5])).result(5)[0] == 10  # the worker lives on
    assert b.pending == 0
    b.close()


# ----------------------------------------------------------------------------- command line


def test_model_references_and_settings(tmp_path):
    assert parse_model_refs(["runs/segment/exp", "deep=x/weights/best.safetensors", "a/b/model.onnx"]) == [
        ("exp", "runs/segment/exp"), ("deep", "x/weights/best.safetensors"), ("model", "a/b/model.onnx")]
    from visionlab.cfg import ConfigError

    with pytest.raises(ConfigError, match="two models are named 'exp'"):
        parse_model_refs(["a/exp", "b/exp"])
    models, host, port, settings, _ = parse_serve_args(["model=a", "model=b=c", "port=9000", "max_mb=0.5",
                                                         "api_key=k"])
    assert models == ["a", "b=c"] and (host, port) == ("127.0.0.1", 9000)
    assert settings.limits.max_bytes == 2**19 and settings.api_key == "k"
    with pytest.raises(ConfigError, match="did you mean 'max_batch'"):
        parse_serve_args(["model=a", "max_btch=4"])
    with pytest.raises(ConfigError, match="port=x"):
        parse_serve_args(["model=a", "port=x"])
    with pytest.raises(ConfigError, match="device=foo not understood"):
        parse_serve_args(["model=a", "device=foo"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            parse_serve_args(["model=a", "device=cuda"])
    assert parse_serve_args(["model=a", "device=cpu"])[3].device == "cpu"


def test_nan_weights_are_refused_at_start(runs, tmp_path):
    from visionlab.serve.models import load_served_model
    from visionlab.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    for key in ("seg", "cls"):  # segment: an argmax would hide NaN logits behind an all-zero mask
        state, meta, _ = load_checkpoint(runs[key] / "weights" / "best.safetensors")
        name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
        state[name] = torch.full_like(state[name], float("nan"))
        save_checkpoint(tmp_path / key / "weights" / "best.safetensors", state, meta)
        with pytest.raises(CheckpointError, match="NaN or infinite"):
            load_served_model(key, str(tmp_path / key))


def test_cli_errors_are_one_line(tmp_path):
    code, out = run_cli("serve", f"model={tmp_path / 'missing'}")
    assert code == 2 and "missing" in out and "Traceback" not in out
    code, out = run_cli("serve", "port=80")
    assert code == 2 and "needs model=" in out
    code, out = run_cli("dashboard", "api=ftp://x")
    assert code == 2 and "api=ftp://x" in out


def test_background_loading(runs):
    from fastapi.testclient import TestClient

    c = TestClient(create_app([str(runs["seg"])], load_in_background=True))
    deadline = time.monotonic() + 60
    while c.get("/ready").status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.get("/ready").status_code == 200
    assert c.post("/predict/seg", files={"file": ("a.png", encode(scene()))}).status_code == 200


def test_exported_file_reports_its_own_parity_not_the_checkpoint_metrics(runs, tmp_path):
    import shutil

    from visionlab.serve.models import run_metrics

    weights = runs["seg"] / "weights"
    assert run_metrics(weights / "best.safetensors") == {"miou": 0.42}  # results.json of the run
    exported = tmp_path / "weights" / "best_int8.onnx"
    exported.parent.mkdir()
    shutil.copy(runs["seg"] / "results.json", tmp_path / "results.json")
    exported.write_bytes(b"")
    assert run_metrics(exported) is None  # no parity file: nothing measured on this file
    Path(f"{exported}.parity.json").write_text(json.dumps({"parity": {
        "metric": "miou", "reference": 0.42, "exported": 0.4188, "images": 4}}))
    assert run_metrics(exported) == {"miou": 0.4188, "checkpoint_miou": 0.42, "images": 4,
                                     "measured_by": "export parity check"}
