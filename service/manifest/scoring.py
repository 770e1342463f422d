"""Corpus scores of a manifest run against the entries' ``answer`` fields: WER for transcription, BLEU for
translation. Small and self-contained (no sacrebleu/jiwer dependency for two formulas).

* WER: word-level edit distance (substitutions + deletions + insertions) summed over the corpus, divided by
  the number of reference words; texts are lower-cased and punctuation is removed first.
* BLEU: corpus BLEU-4 (Papineni et al. 2002) with one reference per entry: clipped n-gram precisions for
  n = 1..4 pooled over the corpus, their geometric mean, times the brevity penalty ``exp(1 - r/c)`` when
  the hypotheses are shorter than the references. Case-sensitive; punctuation marks are tokens of their own
  (like sacreBLEU's default tokenizer); no smoothing. Reported on sacreBLEU's 0–100 scale.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalise_words(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (``"Don't, stop!"`` → ``["dont", "stop"]``)."""
    kept = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return kept.split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (one row of the table at a time)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def wer(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Corpus WER of ``(reference, hypothesis)`` pairs; ``None`` when there is no reference word."""
    edits = words = 0
    for ref, hyp in pairs:
        ref_words = normalise_words(ref)
        edits += edit_distance(ref_words, normalise_words(hyp))
        words += len(ref_words)
    return edits / words if words else None


def bleu_tokens(text: str) -> list[str]:
    """Words and punctuation marks, case kept (``"Hello, world!"`` → ``["Hello", ",", "world", "!"]``)."""
    return _TOKEN.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(pairs: Iterable[tuple[str, str]], max_n: int = 4) -> float | None:
    """Corpus BLEU-``max_n`` (0–100) of ``(reference, hypothesis)`` pairs; ``None`` without any pair."""
    matches, totals = [0] * max_n, [0] * max_n
    ref_len = hyp_len = count = 0
    for ref, hyp in pairs:
        r, h = bleu_tokens(ref), bleu_tokens(hyp)
        ref_len, hyp_len, count = ref_len + len(r), hyp_len + len(h), count + 1
        for n in range(1, max_n + 1):
            hyp_grams, ref_grams = _ngrams(h, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, ref_grams[gram]) for gram, c in hyp_grams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if not count:
        return None
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * brevity * math.exp(log_precision)
