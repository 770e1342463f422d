"""Turn whatever ``transcribe()`` was given into mono float32 waveforms at the model's rate.

Accepted (as in NeMo, plus mixed lists): a path, a list of paths, a NeMo manifest (``.json`` /
``.jsonl``), manifest-entry dicts, numpy arrays and torch tensors (assumed to be at the model's sample
rate already, as NeMo assumes), or any mix of those.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.audio import FloatAudio, load_audio, prepare_array
from models.errors import AudioError

MANIFEST_SUFFIXES = (".json", ".jsonl")


@dataclass
class AudioItem:
    """One utterance to transcribe; ``entry`` keeps manifest fields (task, languages, ...)."""

    audio: FloatAudio
    name: str
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.audio.shape[0])


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries of a NeMo manifest: JSON Lines, or one JSON array. Relative audio paths are manifest-relative."""
    path = Path(path)
    text = path.read_text()
    stripped = text.lstrip()
    try:
        entries = json.loads(text) if stripped.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]
    except json.JSONDecodeError as exc:
        raise AudioError(f"{path}: not a valid manifest ({exc})") from exc
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "audio_filepath" not in entry:
            raise AudioError(f"{path}: entry {i} has no 'audio_filepath'")
        audio_path = Path(entry["audio_filepath"]).expanduser()
        if not audio_path.is_absolute():
            entry["audio_filepath"] = str(path.parent / audio_path)
    return entries


def _is_manifest(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value).endswith(MANIFEST_SUFFIXES)


def expand(audio: Any) -> list[Any]:
    """Flatten the ``audio`` argument into a list of sources, reading manifests into entries."""
    if isinstance(audio, (str, os.PathLike, np.ndarray, torch.Tensor, dict)):
        audio = [audio]
    if not isinstance(audio, Iterable):
        raise AudioError(f"cannot transcribe an object of type {type(audio).__name__}")
    out: list[Any] = []
    for item in audio:
        out.extend(read_manifest(item) if _is_manifest(item) else [item])
    return out


def load_item(source: Any, sample_rate: int, index: int, channel_selector: Any = "average") -> AudioItem:
    """Load one source (path, entry dict, array or tensor) as an :class:`AudioItem`."""
    selector = "average" if channel_selector is None else channel_selector
    if isinstance(source, (str, os.PathLike)):
        return AudioItem(load_audio(source, sample_rate, channel_selector=selector), str(source))
    if isinstance(source, dict):
        if "audio_filepath" not in source:
            raise AudioError(f"input {index}: a manifest entry needs 'audio_filepath'")
        duration = source.get("duration")
        audio = load_audio(
            source["audio_filepath"], sample_rate, channel_selector=selector,
            offset=float(source.get("offset") or 0.0), duration=float(duration) if duration else None,
        )
        return AudioItem(audio, str(source["audio_filepath"]), dict(source))
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        name = f"array[{index}]"
        return AudioItem(prepare_array(source, sample_rate, sample_rate, name), name)
    raise AudioError(
        f"input {index}: unsupported type {type(source).__name__}; pass file paths, numpy arrays or torch tensors"
    )


def collate(items: list[AudioItem], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with zeros: ``([B, N] float32, [B] int64)``."""
    lengths = torch.tensor([it.num_samples for it in items], dtype=torch.int64)
    batch = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for row, it in enumerate(items):
        batch[row, : it.num_samples] = torch.from_numpy(it.audio)
    return batch.to(device), lengths.to(device)
