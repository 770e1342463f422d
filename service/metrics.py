"""Prometheus metrics of the inference path, in a registry of their own (one per service instance)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The histograms and counters the workers and the pool feed; rendered by ``GET /metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.batch_size = Histogram(
            "aviary_batch_size", "Items per model batch.", ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )
        self.batch_padded_seconds = Histogram(
            "aviary_batch_padded_audio_seconds", "Padded audio seconds per batch (longest item × items; packing models: per length group).",
            ["model"], buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600), registry=r,
        )
        self.queue_wait = Histogram(
            "aviary_queue_wait_seconds", "Time an item waited in its model's queue before its batch ran.",
            ["model"], buckets=_SECONDS, registry=r,
        )
        self.rtfx = Histogram(
            "aviary_batch_rtfx", "Inverse real-time factor per batch: audio seconds per second of compute.",
            ["model"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000), registry=r,
        )
        self.items = Counter(
            "aviary_items_total", "Audio items by outcome (ok, error, cancelled, expired).",
            ["model", "outcome"], registry=r,
        )
        self.load_seconds = Histogram(
            "aviary_model_load_seconds", "Model load + warm-up time.", ["model"], buckets=_SECONDS, registry=r,
        )
        self.loaded_models = Gauge("aviary_loaded_models", "Models currently loaded.", registry=r)
        self.queued_audio = Gauge(
            "aviary_queued_audio_seconds", "Audio seconds waiting in a model's queue.", ["model"], registry=r
        )

    def observe_batch(
        self, model: str, durations: Sequence[float], waits: Sequence[float], compute_s: float,
        padded_s: float | None = None,
    ) -> None:
        """Record one finished batch: its size, padded seconds (default: longest × items), each item's queue
        wait, and its RTFx."""
        self.batch_size.labels(model).observe(len(durations))
        padded = max(durations) * len(durations) if padded_s is None else padded_s
        self.batch_padded_seconds.labels(model).observe(padded)
        for wait in waits:
            self.queue_wait.labels(model).observe(wait)
        if compute_s > 0:
            self.rtfx.labels(model).observe(sum(durations) / compute_s)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
