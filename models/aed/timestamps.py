"""Word and segment timestamps from the frame tokens canary2 models emit with ``<|timestamp|>``.

With the timestamp flag on, canary-1b-flash / canary-180m-flash write ``<|s|>word<|e|>`` — ``s`` and ``e``
are encoder frame indices. NeMo (``process_aed_timestamp_outputs``) strips the text, takes every
non-overlapping ``<|s|>…<|e|>`` match with non-blank content as one word entry, rebuilds the text from those
words, and groups words into segments ending at ``.``, ``?`` or ``!``; there are no char timestamps.
"""

from __future__ import annotations

import re
from typing import Any

from models import timestamps as ts

_ANY_PAIR = re.compile(r"<\|\d+\|>.*?<\|\d+\|>")
_PAIR = re.compile(r"<\|(\d+)\|>(.*?)<\|(\d+)\|>")


def parse(text: str, frame_stride: float, subsampling: int) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Transcript with frame tokens → (clean text, ``{"word", "segment", "char"}`` timestamp lists)."""
    text = text.strip()
    if not _ANY_PAIR.search(text):
        return text, {"word": [], "segment": [], "char": []}
    words = []
    for match in _PAIR.finditer(text):
        content = match.group(2).strip()
        if content:
            start, end = int(match.group(1)), int(match.group(3))
            words.append({"word": content, "start_offset": start, "end_offset": end})
    ts.add_seconds(words, frame_stride, subsampling)
    segments = ts.add_seconds(ts.segments(words, ts.SEGMENT_SEPARATORS), frame_stride, subsampling)
    return " ".join(w["word"] for w in words), {"word": words, "segment": segments, "char": []}
