"""Micro-batching of concurrent requests for one model, off the event loop.

Each model gets one worker thread. Requests enqueue an image and get a Future; the worker takes the first
waiting image, then gathers more for up to ``max_wait_ms`` (or until ``max_batch``), runs ``Task.infer``
once on the lot and resolves every Future. One call on 4 images costs far less than 4 calls on a CPU
(fewer Python/dispatch round-trips, better BLAS shapes), and one worker per model means requests never
fight over the cores. Admission is bounded (``max_pending``): beyond it ``submit`` raises ``QueueFull``
at once, which the API turns into 503 + Retry-After instead of letting latency grow without bound.

Thread-based rather than asyncio-based on purpose: the worker does not belong to any event loop, so the
same batcher serves uvicorn, a TestClient (a fresh loop per request) and plain threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np


class QueueFull(RuntimeError):
    """More images admitted for this model than ``max_pending``."""


class MicroBatcher:
    def __init__(self, infer: Callable[[Sequence[np.ndarray]], list[Any]], max_batch: int = 8,
                 max_wait_ms: float = 5.0, max_pending: int = 64, name: str = "model",
                 on_batch: Callable[[int], None] | None = None):
        """``infer``: images -> one result per image (e.g. ``partial(task.infer, model, imgsz=..)``)."""
        if max_batch < 1 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1")
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1000.0
        self.max_pending, self.name, self.on_batch = max_pending, name, on_batch
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name=f"infer-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def admit(self) -> None:
        """Take a place before the image exists (the server admits a request before decoding it, so a burst
        of uploads cannot fill memory with decoded images); then ``submit(image, admitted=True)`` or ``cancel()``."""
        with self._lock:
            if self._pending >= self.max_pending or not self._thread.is_alive():
                raise QueueFull(f"model {self.name}: {self._pending} images already queued")
            self._pending += 1

    def cancel(self) -> None:
        """Give back a place taken by ``admit`` (the upload was refused)."""
        with self._lock:
            self._pending -= 1

    def submit(self, image: np.ndarray, admitted: bool = False) -> Future:
        """Queue one image; its Future resolves to the result (or the exception ``infer`` raised)."""
        if not admitted:
            self.admit()
        future: Future = Future()
        future.add_done_callback(self._release)
        self._queue.put((image, future))
        return future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _collect(self) -> list[tuple[np.ndarray, Future]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if item is None:  # closing: answer what we have, then stop
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            live = [(im, f) for im, f in batch if f.set_running_or_notify_cancel()]  # skip cancelled requests
            if not live:
                continue
            try:
                results = self.infer([im for im, _ in live])
                if self.on_batch is not None:
                    self.on_batch(len(live))
            except BaseException as e:  # noqa: BLE001  a failing batch fails its requests, never the worker
                for _, f in live:
                    f.set_exception(e)
                continue
            for (_, f), result in zip(live, results):
                f.set_result(result)
            del batch, live, results  # images and results are freed here, not when the next batch arrives
