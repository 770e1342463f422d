"""Shape outcomes into the response body (shared by the HTTP API and ``aviary transcribe --json``)."""

from __future__ import annotations

from typing import Any

from service.batching.jobs import ItemResult, TranscribeOutcome


def outcome_body(outcome: TranscribeOutcome) -> dict[str, Any]:
    """``{"model": ..., "results": [...]}``, one result per input in input order."""
    return {
        "model": outcome.model,
        "results": [
            item_body(item, hypotheses=outcome.return_hypotheses, timestamps=outcome.timestamps)
            for item in outcome.items
        ],
    }


def item_body(item: ItemResult, *, hypotheses: bool, timestamps: bool) -> dict[str, Any]:
    """One input's result; ``hypothesis`` and ``timestamps`` only when asked for."""
    hyp = item.hypothesis
    body: dict[str, Any] = {
        "index": item.index, "filename": item.filename, "duration": round(item.duration, 6), "text": hyp.text,
    }
    strategy = getattr(hyp, "strategy", None)
    if strategy:  # how the encoder saw the input: full, local_attention or chunked (long audio)
        body["strategy"] = strategy
    if hypotheses:
        body["hypothesis"] = {
            "tokens": [int(t) for t in (hyp.tokens or [])],
            "score": float(hyp.score),
            "alignments": _plain(hyp.alignments),
        }
    if timestamps:
        stamps = hyp.timestamp if isinstance(hyp.timestamp, dict) else {}
        body["timestamps"] = {
            "word": [_span(w, "word") for w in stamps.get("word", [])],
            "segment": [_span(s, "segment") for s in stamps.get("segment", [])],
        }
    return body


def _span(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {key: str(entry.get(key, "")), "start": float(entry["start"]), "end": float(entry["end"])}


def _plain(value: Any) -> Any:
    """Tensors and arrays → nested lists of floats; ``None`` stays ``None``."""
    if value is None:
        return None
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().float().cpu().numpy()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
