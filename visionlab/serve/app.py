"""``visionlab serve``: a FastAPI app over one or more models of any task.

The app never branches on a task: input checks are the same for every model (``imaging.decode_upload``),
inference is ``Task.infer`` (micro-batched in a worker thread per model, ``batching.MicroBatcher``), and
the answer is ``Task.encode_response`` in a format from ``Task.response_formats``, picked by ``?format=``
or else the Accept header. Every rejection is a JSON body ``{"detail", "code", "request_id"}`` with a 4xx
status; a request id (``X-Request-ID``, echoed or generated) is on every response and log line.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from visionlab.serve.batching import MicroBatcher, QueueFull
from visionlab.serve.imaging import UploadError, decode_upload
from visionlab.serve.metrics import ServeMetrics
from visionlab.serve.models import ServedModel, load_served_model, parse_model_refs
from visionlab.serve.settings import ServeSettings

log = logging.getLogger("visionlab.serve")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced, never logged as is


class ApiError(HTTPException):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status, " ".join(detail.split()), headers)
        self.code = code


class ErrorBody(BaseModel):
    detail: str
    code: str
    request_id: str | None = None


class ModelInfo(BaseModel):
    name: str
    task: str
    path: str
    arch: str | None = None
    params: int | None = None
    input_size: list[int]
    input_multiple: int
    keep_aspect: bool = False
    labels: list[str] | None = None
    formats: dict[str, str]
    default_format: str
    metrics: dict[str, Any] | None = None


_ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in [
    (400, "bad request (empty file, unknown format)"), (401, "X-API-Key missing"), (403, "X-API-Key wrong"),
    (404, "no such model"), (406, "no acceptable format"), (413, "file or image too large"),
    (415, "not a supported image type"), (422, "invalid or undecodable input"),
    (503, "busy (see Retry-After) or models not loaded")]}


class _State:
    """The models of one app; filled at start-up or by a background thread (then ``/ready`` waits)."""

    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = {}
        self.ready = threading.Event()
        self.error: str | None = None


# ----------------------------------------------------------------------------- middleware


class RequestContext:
    """Pure ASGI middleware: request id, body size limit, metrics, one structured JSON log line."""

    def __init__(self, app: Any, metrics: ServeMetrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status, started, t0 = 500, False, time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_with_id(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise ApiError(413, "too_large", f"request body over the limit of {self.max_body:,} bytes")
            return message

        try:
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                raise ApiError(413, "too_large", f"request body of {int(length):,} bytes is over the limit of "
                                                 f"{self.max_body:,} bytes")
            await self.app(scope, limited_receive, send_with_id)
        except ApiError as e:  # raised before the app could answer (size checks)
            if started:
                raise
            await _send_error(send_with_id, e.status_code, e.code, e.detail, rid)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # templates, never raw paths: bounded labels
            seconds = time.perf_counter() - t0
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info(json.dumps({"event": "request", "request_id": rid, "method": scope["method"],
                                 "path": scope["path"], "route": route, "status": status,
                                 "ms": round(seconds * 1000, 2), "model": scope.get("path_params", {}).get("name")}))


async def _send_error(send: Any, status: int, code: str, detail: str, rid: str) -> None:
    body = json.dumps({"detail": detail, "code": code, "request_id": rid}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- content negotiation


def negotiate(formats: dict[str, str], requested: str | None, accept: str | None, model: str) -> str:
    """``?format=`` wins; else the Accept header's best match (q-values honoured, the default format first
    among equals); no Accept or ``*/*`` -> the model's default format."""
    default = next(iter(formats))
    if requested:
        if requested not in formats:
            raise ApiError(400, "bad_format", f"format={requested}: model {model} answers in "
                                              f"{', '.join(formats)}")
        return requested
    if not accept or not accept.strip():
        return default
    ranges: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if media:
            ranges.append((-q, i, media.lower()))
    listed = {media for _, _, media in ranges}
    # q=0 refuses a type ("image/png;q=0, */*" must not answer PNG), unless a more specific range accepts it
    refused = {m for q, _, m in ranges if q == 0}

    def allowed(media_type: str) -> bool:
        family = media_type.split("/")[0] + "/*"
        return media_type not in refused and (family not in refused or media_type in listed - refused)

    for _, _, media in sorted(r for r in ranges if r[0] < 0):
        for name, media_type in formats.items():
            if allowed(media_type) and (media in ("*/*", "*") or media == media_type or (
                    media.endswith("/*") and media_type.startswith(media[:-1]))):
                return name
    raise ApiError(406, "not_acceptable", f"Accept: {accept[:200]}: model {model} answers in "
                                          f"{', '.join(sorted(set(formats.values())))} (or use ?format=)")


# ----------------------------------------------------------------------------- the app


def create_app(models: list[str] | list[ServedModel], settings: ServeSettings | None = None,
               load_in_background: bool = False) -> FastAPI:
    """An API over ``models``: ``model=`` references (``PATH`` or ``NAME=PATH``), or already loaded
    ``ServedModel`` objects. Loading happens here (errors are CheckpointError / ConfigError naming the
    file), or in a thread with ``load_in_background`` (``/ready`` answers 503 until it is done)."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    state = _State()

    def start(loaded: list[ServedModel]) -> None:
        for served in loaded:
            served.batcher = MicroBatcher(served.infer, settings.max_batch, settings.max_wait_ms,
                                          settings.max_pending, served.name,
                                          on_batch=metrics.batch_size.labels(served.name).observe)
            state.models[served.name] = served
        state.ready.set()

    def load_all() -> list[ServedModel]:
        if models and all(isinstance(m, ServedModel) for m in models):
            return list(models)  # type: ignore[arg-type]
        return [load_served_model(name, path, settings.device) for name, path in parse_model_refs(list(models))]

    if load_in_background:
        if not all(isinstance(m, ServedModel) for m in models):
            parse_model_refs(list(models))  # bad references fail now, not in the thread

        def background() -> None:
            try:
                start(load_all())
            except Exception as e:  # noqa: BLE001  reported by /ready, never a dead server
                state.error = f"{type(e).__name__}: {e}"
                log.error(json.dumps({"event": "load_failed", "error": state.error}))

        threading.Thread(target=background, name="load-models", daemon=True).start()
    else:
        start(load_all())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        for served in state.models.values():
            if served.batcher is not None:
                served.batcher.close()

    app = FastAPI(title="visionlab API", version=_version(), lifespan=lifespan,
                  description="Predictions of visionlab models (segmentation, depth, classification). "
                              "See docs/serving.md.")
    app.state.serve = state
    app.state.settings = settings
    app.add_middleware(RequestContext, metrics=metrics, max_body=settings.limits.max_bytes + 64 * 1024)
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when the server "
                                                                                  "was started with api_key=")

    def require_key(key: str | None = Depends(api_key_header)) -> None:
        if settings.api_key is None:
            return
        if not key:
            raise ApiError(401, "missing_api_key", "this server needs an X-API-Key header",
                           {"WWW-Authenticate": "APIKey"})
        if not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise ApiError(403, "bad_api_key", "the X-API-Key header is not valid for this server")

    def rid(request: Request) -> str | None:
        return request.scope.get("state", {}).get("request_id")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "code", {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error"))
        return JSONResponse({"detail": str(exc.detail), "code": code, "request_id": rid(request)},
                            exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        detail = f"{where}: {first.get('msg', 'invalid request')}"
        if where == "body.file":
            detail = "expected a multipart/form-data upload with the image in the field 'file'"
        return JSONResponse({"detail": detail, "code": "invalid_request", "request_id": rid(request)}, 422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error(json.dumps({"event": "error", "request_id": rid(request), "error": f"{type(exc).__name__}: {exc}"}))
        return JSONResponse({"detail": "internal error (logged with this request id)", "code": "internal",
                             "request_id": rid(request)}, 500)

    def served_model(name: str) -> ServedModel:
        if not state.ready.is_set():
            raise ApiError(503, "loading", state.error or "models are still loading",
                           {"Retry-After": str(settings.retry_after_s)})
        if name not in state.models:
            raise ApiError(404, "unknown_model", f"no model named '{name}'; models: {', '.join(state.models)}")
        return state.models[name]

    @app.get("/", summary="What this server is")
    def root() -> dict[str, Any]:
        return {"name": "visionlab API", "version": _version(), "models": sorted(state.models),
                "ready": state.ready.is_set(), "docs": "/docs", "openapi": "/openapi.json",
                "endpoints": ["/health", "/ready", "/models", "/predict/{name}", "/metrics"]}

    @app.get("/health", summary="Liveness: the process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: every model is loaded", responses={503: _ERRORS[503]})
    def ready(request: Request) -> Any:
        if state.ready.is_set():
            return {"ready": True, "models": sorted(state.models)}
        return JSONResponse({"detail": state.error or "models are still loading", "code": "loading",
                             "request_id": rid(request)}, 503, headers={"Retry-After": str(settings.retry_after_s)})

    # the key check (and its place in the OpenAPI schema) exists only when a key is set: a schema that
    # promises 401s the server never sends would be a broken contract
    guarded = [Depends(require_key)] if settings.api_key else []
    protected = {401: _ERRORS[401], 403: _ERRORS[403]} if settings.api_key else {}

    @app.get("/models", summary="The served models", dependencies=guarded,
             responses={**protected, 503: _ERRORS[503]})
    def list_models() -> list[ModelInfo]:
        if not state.ready.is_set():
            served_model("")  # 503 while loading
        return [ModelInfo(**m.info()) for m in state.models.values()]

    @app.get("/models/{name}", summary="One served model", dependencies=guarded,
             responses={**protected, 404: _ERRORS[404], 503: _ERRORS[503]})
    def model_info(name: str) -> ModelInfo:
        return ModelInfo(**served_model(name).info())

    @app.post("/predict/{name}", dependencies=guarded,
              summary="Predict on one image (multipart field 'file')",
              response_model=None,
              responses={200: {"description": "the prediction: PNG (image/png) or JSON, see ?format=",
                               "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                           "application/json": {"schema": {"type": "object"}}}},
                         **protected, **{s: _ERRORS[s] for s in (400, 404, 406, 413, 415, 422, 503)}})
    async def predict(
        request: Request, name: str, file: UploadFile = File(..., description="the image (PNG, JPEG, BMP, TIFF, WebP)"),
        format: str | None = Query(None, description="response format, one of the model's formats (GET /models); "
                                                     "default: the Accept header's best match, else the model's default"),
        overlay: bool = Query(False, description="JSON answers: add colour pictures (base64 PNG)"),
        topk: int = Query(5, ge=1, le=1000, description="classification: how many classes"),
    ) -> Response:
        served = served_model(name)
        fmt = negotiate(served.task.response_formats, format, request.headers.get("accept"), name)
        try:  # admitted before decoding: max_pending bounds the decoded images in memory, not only the queue
            served.batcher.admit()
        except QueueFull as e:
            metrics.rejected.labels(name).inc()
            raise ApiError(503, "busy", f"{e}; retry later", {"Retry-After": str(settings.retry_after_s)}) from None
        submitted = False
        try:
            data = await file.read(settings.limits.max_bytes + 1)
            try:
                image = await run_in_threadpool(decode_upload, data, file.filename or "upload", settings.limits)
            except UploadError as e:
                raise ApiError(e.status, e.code, str(e)) from None
            finally:
                del data
            future = served.batcher.submit(image, admitted=True)
            submitted = True
        finally:
            if not submitted:
                served.batcher.cancel()
        metrics.queued.labels(name).inc()
        try:
            result = await asyncio.wrap_future(future)
        except Exception as e:  # noqa: BLE001  inference failed for this batch: the worker lives on
            log.error(json.dumps({"event": "inference_failed", "request_id": rid(request), "model": name,
                                  "error": f"{type(e).__name__}: {e}"}))
            raise ApiError(500, "inference_failed", f"model {name} failed on this image") from None
        finally:
            metrics.queued.labels(name).dec()
        options = {"overlay": overlay, "topk": topk}
        encoded = await run_in_threadpool(served.task.encode_response, result, image, fmt, served.meta, options)
        if isinstance(encoded, dict):
            return JSONResponse({"model": name, "task": served.task.name, **encoded})
        body, media_type = encoded
        return Response(body, media_type=media_type)

    @app.get("/metrics", summary="Prometheus metrics", dependencies=guarded,
             responses={200: {"content": {"text/plain": {}}}, **protected})
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("visionlab")
    except PackageNotFoundError:
        return "0"


class _JsonLines(logging.Formatter):
    """Log records as one JSON object a line (messages that already are JSON objects are merged in)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                                 "logger": record.name}
        message = record.getMessage()
        try:
            parsed = json.loads(message)
            entry.update(parsed if isinstance(parsed, dict) else {"msg": message})
        except ValueError:
            entry["msg"] = message
        return json.dumps(entry)


def serve(models: list[str], host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "info") -> None:
    """Load ``models`` (errors before the port opens), then run uvicorn with JSON log lines on stderr."""
    import uvicorn

    handler = logging.StreamHandler()
    handler.setFormatter(_JsonLines())
    for name in ("visionlab.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(log_level.upper())
        logger.propagate = False
    app = create_app(models, settings)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, log_level=log_level)
