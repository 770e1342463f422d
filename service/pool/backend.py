"""The one narrow contract between the batcher and a model: :class:`Backend`.

The worker calls ``transcribe_batch`` from its own thread and nothing else during serving; the pool calls
``warmup`` after loading and ``close`` before dropping the object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from service.errors import UnsupportedOption

if TYPE_CHECKING:
    from models.hypothesis import Hypothesis
    from service.pool.registry import ModelSpec

FloatAudio = npt.NDArray[np.float32]
Progress = Callable[[str, float], None]  # (strategy, fraction of the encoding done), from the worker thread


@dataclass(frozen=True)
class DecodeOptions:
    """Options that change what the model computes, so items batched together must share them.

    ``return_hypotheses`` is not here: the runtime always returns full hypotheses and the API only trims
    them, so it does not split batches. Neither is a multitask model's prompt (task, languages, pnc...):
    it is per item, so items with different prompts share batches.
    """

    decoder: str | None = None  # None: the model's default decoder
    timestamps: bool = False


@runtime_checkable
class Backend(Protocol):
    """A loaded model as the service sees it.

    A backend may also have ``packs = True``: it runs a batch packed (length groups of its own), so the
    worker batches items of any length together (``AVIARY_MAX_PADDING_WASTE`` does not apply).
    """

    name: str
    sample_rate: int

    def info(self) -> dict[str, Any]:
        """Describe the model: target, architecture, decoders (default first), sample_rate, languages..."""
        ...

    def warmup(self) -> None:
        """Run a dummy input once so the first request does not pay for lazy initialisation."""
        ...

    def transcribe_batch(
        self, audio: list[FloatAudio], options: DecodeOptions, prompts: Sequence[Mapping[str, Any]] | None = None,
        *, progress: Progress | None = None,
    ) -> list[Hypothesis]:
        """Transcribe mono float32 waveforms at ``sample_rate``; one hypothesis per input, in order.

        ``prompts`` (one per input, multitask models only): the input's prompt slots (``task``,
        ``source_lang``, ``target_lang``, ``pnc``...), already checked with ``check_prompt``.
        ``progress``: called with ``(strategy, fraction)`` while a long input is encoded (long-audio
        strategies only; a backend may never call it).
        """
        ...

    def check_prompt(self, prompt: Mapping[str, Any]) -> None:
        """Raise ``UnsupportedOptionError`` (or ``ValueError``) if the model cannot take this prompt."""
        ...

    def close(self) -> None:
        """Drop every reference to the model's tensors."""
        ...


#: Builds a backend for a registered model on a device (``"cpu"``, ``"cuda:0"``...). Runs in a thread.
BackendFactory = Callable[["ModelSpec", str], Backend]


def check_options(model: str, info: Mapping[str, Any], options: DecodeOptions) -> DecodeOptions:
    """Validate ``options`` against what the model supports, normalising the default decoder to ``None``.

    Raises:
        UnsupportedOption: ``decoder`` names a decoder the model lacks.
    """
    decoders = list(info.get("decoders") or [])
    if options.decoder is None or (decoders and options.decoder == decoders[0]):
        return DecodeOptions(None, options.timestamps)
    if options.decoder not in decoders:
        raise UnsupportedOption(
            f"model '{model}' has no '{options.decoder}' decoder (it has: {', '.join(decoders) or 'unknown'}); "
            "decoder=ctc works on hybrid RNNT/TDT+CTC models only — omit it or use decoder=default",
            param="decoder",
        )
    return options
