"""Prometheus metrics of one API instance (its own registry, so several apps in one process never mix)."""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)

disable_created_metrics()  # the *_created series only add noise to a scrape

# latency buckets from a cached health check (~1 ms) to a large image on a slow CPU model (~10 s)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    """Request counts by route and status, latency histogram, in-flight and queued work, batch sizes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("visionlab_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("visionlab_request_seconds", "HTTP request latency (seconds) by route template",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("visionlab_requests_in_flight", "HTTP requests being handled",
                               registry=self.registry)
        self.queued = Gauge("visionlab_inference_queued", "Images admitted and not yet answered, by model",
                            ["model"], registry=self.registry)
        self.batch_size = Histogram("visionlab_batch_size", "Images per model call, by model", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32), registry=self.registry)
        self.rejected = Counter("visionlab_rejected", "Requests refused because the inference queue was full",
                                ["model"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
