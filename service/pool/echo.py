"""``EchoBackend``: the first-class test double of the backend contract.

It "transcribes" each input as its duration (``echo 1.2340``), so a client can check that it got its own
results back whatever the batching, and it sleeps ``k`` seconds per padded audio second so that queueing,
batching and backpressure behave as they would with a real model. Given ``languages`` it behaves like a
multitask model and writes each item's prompt into its transcript (``echo[source_lang=de,task=ast] 1.2340``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from models.errors import UnsupportedOptionError
from models.hypothesis import Hypothesis
from service.pool.backend import DecodeOptions, FloatAudio, Progress

_FLAGS = {"true", "false", "yes", "no", "1", "0"}


def echo_text(duration: float, decoder: str | None = None, prompt: Mapping[str, Any] | None = None) -> str:
    """The transcript EchoBackend gives for an input of ``duration`` seconds (and, multitask, its prompt)."""
    tag = ",".join(f"{key}={value}" for key, value in sorted((prompt or {}).items()))
    return f"echo{'/' + decoder if decoder else ''}{f'[{tag}]' if tag else ''} {duration:.4f}"


class EchoBackend:
    """Answers with each input's duration; sleeps ``seconds_per_second`` × padded batch seconds.

    Args:
        name: model name.
        sample_rate: the rate inputs must arrive at.
        seconds_per_second: simulated compute per padded audio second (0: instant).
        decoders: decoder types, default first; ``("rnnt", "ctc")`` behaves like a hybrid.
        fail_if: makes ``transcribe_batch`` raise when it returns True for any input (worker-survival tests).
        load_seconds: time ``warmup`` takes (load-sharing tests).
        languages: makes it multitask (prompt format ``echo``, tasks asr and ast) in these languages.
        long_audio_s: a batch holding an input longer than this reports progress (strategy ``echo``) in
            quarters of its compute time, like the runtime's long-audio strategies.
    """

    def __init__(
        self,
        name: str = "echo",
        *,
        sample_rate: int = 16000,
        seconds_per_second: float = 0.0,
        decoders: Sequence[str] = ("rnnt", "ctc"),
        fail_if: Callable[[FloatAudio], bool] | None = None,
        load_seconds: float = 0.0,
        languages: Sequence[str] | None = None,
        long_audio_s: float = math.inf,
        packs: bool = False,
    ):
        self.name = name
        self.packs = packs  # pretend to run batches packed (the worker then ignores the padding bound)
        self.sample_rate = sample_rate
        self.seconds_per_second = seconds_per_second
        self.decoders = tuple(decoders)
        self.fail_if = fail_if
        self.load_seconds = load_seconds
        self.languages = list(languages) if languages else None
        self.long_audio_s = long_audio_s
        self.batches: list[list[float]] = []  # durations of every batch run, for tests
        self.prompts: list[list[dict[str, Any]]] = []  # the prompts of every batch run
        self.threads: set[str] = set()  # names of the threads that ran batches
        self.closed = False
        self.warmed = False

    def info(self) -> dict[str, Any]:
        return {
            "target": "service.pool.echo.EchoBackend",
            "architecture": "echo",
            "decoders": list(self.decoders),
            "sample_rate": self.sample_rate,
            "languages": self.languages,
            "tasks": ["asr", "ast"] if self.languages else ["asr"],
            "prompt_format": "echo" if self.languages else None,
        }

    def warmup(self) -> None:
        time.sleep(self.load_seconds)
        self.warmed = True

    def check_prompt(self, prompt: Mapping[str, Any]) -> None:
        """Like the runtime: flags must be booleans."""
        for slot in ("pnc", "itn", "diarize"):
            if slot in prompt and str(prompt[slot]).lower() not in _FLAGS:
                raise UnsupportedOptionError(f"{slot}={prompt[slot]!r} is not a boolean (use true/false, yes/no)")

    def transcribe_batch(
        self, audio: list[FloatAudio], options: DecodeOptions, prompts: Sequence[Mapping[str, Any]] | None = None,
        *, progress: Progress | None = None,
    ) -> list[Hypothesis]:
        if self.closed:
            raise RuntimeError(f"echo backend '{self.name}' is closed")
        durations = [len(a) / self.sample_rate for a in audio]
        items = [dict(p) for p in prompts] if prompts is not None and self.languages else [{} for _ in audio]
        self.batches.append(durations)
        self.prompts.append(items)
        self.threads.add(threading.current_thread().name)
        if self.fail_if is not None and any(self.fail_if(a) for a in audio):
            raise RuntimeError("echo backend asked to fail on this input")
        compute = self.seconds_per_second * max(durations, default=0.0) * len(durations)
        if progress is not None and max(durations, default=0.0) > self.long_audio_s:
            for quarter in range(1, 5):
                time.sleep(compute / 4)
                progress("echo", quarter / 4)
        else:
            time.sleep(compute)
        return [self._hypothesis(d, options, p) for d, p in zip(durations, items)]

    def close(self) -> None:
        self.closed = True

    def _hypothesis(self, duration: float, options: DecodeOptions, prompt: Mapping[str, Any]) -> Hypothesis:
        token = round(duration * 1000)
        hyp = Hypothesis(
            score=-duration, y_sequence=[token], text=echo_text(duration, options.decoder, prompt), tokens=[token],
            alignments=torch.full((2, 3), float(np.log(1 / 3))), length=2,
        )
        if options.timestamps:
            word = {"word": "echo", "start_offset": 0, "end_offset": 1, "start": 0.0, "end": duration}
            segment = {"segment": hyp.text, "start_offset": 0, "end_offset": 1, "start": 0.0, "end": duration}
            hyp.timestamp = {"char": [], "word": [word], "segment": [segment]}
        return hyp
