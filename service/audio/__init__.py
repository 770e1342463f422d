"""Audio in: undecoded inputs, decoding and resampling to the model's rate, and the input limits."""

from __future__ import annotations

from service.audio.decode import check_media_type, decode_input, load_npy
from service.audio.inputs import AudioInput, DecodedAudio

__all__ = ["AudioInput", "DecodedAudio", "check_media_type", "decode_input", "load_npy"]
