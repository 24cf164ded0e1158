"""Prometheus metrics of the server (`GET /metrics`, the text exposition format).

Each app gets its own registry, so several servers (tests) in one process do not clash.
Routes are labelled by their template, and unknown paths as "other", so a client
probing random URLs cannot grow the label set.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Route templates the metrics name; other paths count as "other".
ROUTES = (
    "/",
    "/healthz",
    "/metrics",
    "/v1/models",
    "/v1/audio/transcriptions",
    "/v1/stream",
)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics", "route_label"]


def route_label(path: str) -> str:
    """The route template a request path counts under."""
    if path in ROUTES:
        return path
    if path.startswith("/static/"):
        return "/static"
    return "other"


class ServeMetrics:
    """Request counts, latency, queue length, streams, batches and audio seconds."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stenograph_http_requests",
            "HTTP requests and WebSocket sessions by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stenograph_http_request_duration_seconds",
            "Time from request start to the end of the response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "stenograph_audio_seconds",
            "Seconds of audio transcribed, by route.",
            ["route"],
            registry=self.registry,
        )
        self.queue_length = Gauge(
            "stenograph_queue_length",
            "Transcription requests in flight (queued or running).",
            registry=self.registry,
        )
        self.model_queue = Gauge(
            "stenograph_model_queue_windows",
            "Audio windows waiting for a model call in the batcher.",
            registry=self.registry,
        )
        self.streams = Gauge(
            "stenograph_streams_active", "Open live WebSocket streams.", registry=self.registry
        )
        self.rejected = Counter(
            "stenograph_rejected",
            "Requests refused because the queue was full (503).",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "stenograph_model_batch_size",
            "Waveforms per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "stenograph_model_call_seconds",
            "Duration of one batched model call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_model_queue(self, pending: Callable[[], int]) -> None:
        """Makes the model-queue gauge read `pending()` at scrape time."""
        self.model_queue.set_function(pending)

    def record_batch(self, size: int, seconds: float) -> None:
        """Records one batched model call."""
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)

    def record_request(self, path: str, method: str, status: int, seconds: float) -> None:
        """Counts one finished request."""
        route = route_label(path)
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
