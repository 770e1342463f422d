"""``RuntimeBackend``: the backend contract over the plain-PyTorch NeMo-compatible runtime in ``models/``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import UnsupportedOptionError
from service.pool.backend import DecodeOptions, FloatAudio, Progress

if TYPE_CHECKING:
    from models.hypothesis import Hypothesis
    from service.pool.registry import ModelSpec

log = logging.getLogger("aviary.pool")
_WARMUP_SECONDS = 1.0


class RuntimeBackend:
    """One restored ``ASRModel`` on one device. Multitask (AED) models decode through ``transcribe_items``,
    each item carrying its own prompt, so items with different tasks and languages share a batch."""

    def __init__(self, name: str, model: Any):
        self.name = name
        self._model = model
        self.sample_rate = int(model.sample_rate)
        # info() may count parameters; compute it once, not per request.
        self._info = {**dict(model.info()), "decoders": list(model.decoder_types), "device": str(model.device)}
        self._multitask = "aed" in self._info["decoders"]
        # packed execution (models.asr_model.ASRModel.encode): the worker need not batch similar lengths
        self.packs = bool(getattr(model, "packs", False))

    @classmethod
    def load(cls, spec: ModelSpec, device: str, long_audio_s: float | None = None) -> RuntimeBackend:
        """Restore ``spec.location`` onto ``device``; inputs over ``long_audio_s`` seconds use the runtime's
        long-audio strategies (local attention or chunked encoding).

        Raises:
            models.errors.CheckpointError: the file is missing, malformed or of an unsupported architecture.
        """
        from models import ASRModel  # deferred: the runtime (and torch) load only when a model does

        model = ASRModel.restore_from(spec.location, map_location=device)
        if long_audio_s is not None and hasattr(model, "long_audio"):
            import dataclasses

            model.long_audio = dataclasses.replace(model.long_audio, threshold_s=long_audio_s)
        return cls(spec.name, model)

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def warmup(self) -> None:
        # Low-amplitude noise rather than silence so every decoder path (emissions, not just blanks) runs.
        noise = np.random.default_rng(0).normal(0, 0.05, int(self.sample_rate * _WARMUP_SECONDS))
        self.transcribe_batch([noise.astype(np.float32)], DecodeOptions())

    def check_prompt(self, prompt: Mapping[str, Any]) -> None:
        if not self._multitask or self._model is None:
            return
        try:
            self._model.prompt_ids(dict(prompt))
        except ValueError as exc:
            raise UnsupportedOptionError(str(exc)) from None

    def transcribe_batch(
        self, audio: list[FloatAudio], options: DecodeOptions, prompts: Sequence[Mapping[str, Any]] | None = None,
        *, progress: Progress | None = None,
    ) -> list[Hypothesis]:
        if self._model is None:
            raise RuntimeError(f"model '{self.name}' was closed")
        if self._multitask:
            return self._transcribe_items(audio, options, prompts)
        hyps = self._model.transcribe(
            audio, batch_size=len(audio), return_hypotheses=True,
            timestamps=True if options.timestamps else None, decoder_type=options.decoder, verbose=False,
            long_audio={"progress": _ProgressLog(self.name, progress)},
        )
        # NeMo's hybrids once returned (best, all) pairs; accept that shape too.
        if isinstance(hyps, tuple) and len(hyps) == 2 and isinstance(hyps[0], list):
            hyps = hyps[0]
        return list(hyps)

    def _transcribe_items(
        self, audio: list[FloatAudio], options: DecodeOptions, prompts: Sequence[Mapping[str, Any]] | None
    ) -> list[Hypothesis]:
        from models.inputs import AudioItem

        entries = list(prompts) if prompts is not None else [{} for _ in audio]
        items = [AudioItem(a, f"audio[{i}]", dict(e)) for i, (a, e) in enumerate(zip(audio, entries))]
        hyps = self._model.transcribe_items(items, timestamps=options.timestamps, decoder_type=options.decoder)
        for hyp in hyps:
            hyp.text = hyp.text.lstrip()  # NeMo's AED detokeniser keeps the leading space of the first piece
        return list(hyps)

    def close(self) -> None:
        self._model = None


class _ProgressLog:
    """Logs long-audio encoding progress in 10 % steps (the runtime reports after each chunk or layer) and
    passes every report on to ``forward`` (the worker's, which tells the waiting requests)."""

    def __init__(self, model: str, forward: Progress | None = None) -> None:
        self.model, self.forward, self.logged = model, forward, -1

    def __call__(self, strategy: str, fraction: float) -> None:
        step = int(fraction * 10)
        if step > self.logged:
            self.logged = step
            log.info("model %s: long-audio %s encoding %d%%", self.model, strategy, step * 10)
        if self.forward is not None:
            self.forward(strategy, fraction)
