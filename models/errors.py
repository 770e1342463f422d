"""Errors raised by the runtime. The service maps them onto HTTP statuses."""

from __future__ import annotations


class RuntimeErrorBase(Exception):
    """Base class of all aviary runtime errors."""


class CheckpointError(RuntimeErrorBase):
    """A checkpoint is missing, malformed, unsafe, or of an unsupported architecture."""


class AudioError(RuntimeErrorBase, ValueError):
    """An audio input is empty, undecodable, or of an unsupported shape or type."""


class UnsupportedOptionError(RuntimeErrorBase, ValueError):
    """An option the model does not support (e.g. ``decoder_type="ctc"`` on a pure RNNT model)."""


class UnknownModelError(RuntimeErrorBase, LookupError):
    """A model name that is neither a local path, a catalog name, nor an existing hub repo or revision.

    ``suggestions`` holds the closest known names (possibly empty).
    """

    def __init__(self, message: str, name: str = "", suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.suggestions = suggestions


class HubUnavailableError(RuntimeErrorBase):
    """A model is not in the local cache and its hub cannot be reached (network down, offline, hub error)."""


class HubAccessError(HubUnavailableError):
    """The hub refuses access: a gated or private repo and no (or an insufficient) ``HF_TOKEN``."""


class DownloadError(RuntimeErrorBase):
    """A download failed part-way or produced a truncated/corrupt file; nothing was left in the cache."""
