"""Dynamic batching: jobs, the pure batch policy, the per-model worker thread, and the batcher in front."""

from __future__ import annotations

from service.batching.batcher import Batcher
from service.batching.jobs import ItemResult, Job, TranscribeOutcome, TranscribeRequest
from service.batching.policy import next_batch, padded_seconds
from service.batching.worker import BatchPolicy, ModelWorker

__all__ = [
    "BatchPolicy", "Batcher", "ItemResult", "Job", "ModelWorker", "TranscribeOutcome", "TranscribeRequest",
    "next_batch", "padded_seconds",
]
