"""Prometheus metrics (prometheus-client), exposed at ``/metrics``.

With several workers, ``cnn-serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a shared directory
and ``/metrics`` aggregates every worker (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable

MODEL = ("model", "version")

# every label value comes from a bounded set: route templates, the APIs (service.apis), served
# model names
# and versions, known methods, the status codes the service sends. Names a client makes up
# never become labels.
OTHER = "other"
REQUESTS = Counter(
    "cnn_serve_requests_total",
    "HTTP requests by route, API and status",
    ("route", "method", "protocol", "status"),
)
LATENCY = Histogram(
    "cnn_serve_request_seconds",
    "HTTP request latency by route and API",
    ("route", "protocol"),
    buckets=(
        0.001,
        0.0025,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.025,
        0.05,
        0.075,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
    ),
)
# (route, method, protocol, status) -> its children: a label lookup takes a lock and
# validates the labels each time (~3 µs a request); the key sets are bounded (above)
_REQUEST_CHILDREN: dict[tuple[str, str, str, str], tuple] = {}


def record_request(route: str, method: str, protocol: str, status: str, seconds: float) -> None:
    """One answered request (HTTP or gRPC): counted and its latency observed."""
    key = (route, method, protocol, status)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        children = _REQUEST_CHILDREN[key] = (
            REQUESTS.labels(*key),
            LATENCY.labels(route, protocol),
        )
    children[0].inc()
    children[1].observe(seconds)


MODEL_REQUESTS = Counter(
    "cnn_serve_model_requests_total", "Requests queued for a model version, from every API", MODEL
)
INFERENCE = Histogram(
    "cnn_serve_inference_seconds",
    "Model call latency",
    MODEL,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram(
    "cnn_serve_batch_size",
    "Images per model call",
    MODEL,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge(
    "cnn_serve_queue_depth", "Requests waiting for the model", MODEL, multiprocess_mode="livesum"
)
REJECTED = Counter(
    "cnn_serve_rejected_total",
    "Requests refused (503): the model's queue was full, or they waited in it past the deadline",
    MODEL,
)
SKIPPED = Counter("cnn_serve_skipped_total", "Queued requests dropped: the client had gone", MODEL)
LOAD_SECONDS = Gauge(
    "cnn_serve_model_load_seconds",
    "Time to load and warm up a model",
    MODEL,
    multiprocess_mode="max",
)
ADMISSION_REFUSED = Counter(
    "cnn_serve_admission_refused_total",
    "Requests refused (503) while waiting for a budget",
    ("budget",),
)
MODEL_READY = Gauge(
    "cnn_serve_model_ready", "1 when the model version serves", MODEL, multiprocess_mode="livemin"
)


def exposition() -> tuple[bytes, str]:
    """The metrics text of this process, or of all workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
