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
