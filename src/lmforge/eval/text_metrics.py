"""BLEU-4 and ROUGE-1/2/L between generated and reference texts, scored as LLaMA-Factory scores them.

So that numbers move between the two tools, each definition follows what LLaMA-Factory's predict reports
(nltk's `sentence_bleu` and the `rouge_chinese` package), re-implemented here in a few lines instead of
two more dependencies; `tests/eval/test_text_metrics.py` pins them against values those libraries print:

- BLEU-4 on characters (so Chinese and English are treated alike), uniform weights, brevity penalty
  against the reference length, and nltk's smoothing "method 3" (NIST geometric: the k-th n-gram order
  with no match counts as 1 / (2^k * hypothesis n-grams)).
- ROUGE on words from jieba (which also splits English on spaces and punctuation): ROUGE-N is the F1 of
  the *distinct* n-grams shared by hypothesis and reference, ROUGE-L the F1 of their longest common
  subsequence, both with rouge_chinese's 1e-8 in the denominator. A side with no words scores 0.
- Each score is x100 and rounded to 4 decimals per sample, then averaged over samples.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections import Counter

_SENTENCE_END = [  # rouge_chinese's sentence split, whose only effect is to turn line breaks into word breaks
    (re.compile(r"([。！？\?])([^”’])"), r"\1\n\2"),
    (re.compile(r"(\.{6})([^”’])"), r"\1\n\2"),
    (re.compile(r"(\…{2})([^”’])"), r"\1\n\2"),
    (re.compile(r"([。！？\?][”’])([^，。！？\?])"), r"\1\n\2"),
]


def segment(text: str) -> list[str]:
    """Words of `text` as jieba cuts them (whitespace pieces included, as jieba returns them)."""
    return list(_jieba().cut(text))


@functools.cache
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # once: its dictionary-loading chatter is not the user's concern
    return jieba


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _f1(overlap: int, hyp: int, ref: int) -> float:
    precision = overlap / hyp if hyp else 0.0
    recall = overlap / ref if ref else 0.0
    return 2.0 * precision * recall / (precision + recall + 1e-8)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_words(joined: str) -> list[str]:
    for pattern, replacement in _SENTENCE_END:
        joined = pattern.sub(replacement, joined)
    sentences = [s for s in joined.rstrip().split("\n") if s]
    return [word for s in sentences for word in " ".join(s.split()).split(" ")]


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """{"rouge-1", "rouge-2", "rouge-l"}: F1 in [0, 1] of `prediction` against `reference`."""
    hyp_joined, ref_joined = " ".join(segment(prediction)), " ".join(segment(reference))
    if not hyp_joined.split() or not ref_joined.split():
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    hyp, ref = _rouge_words(hyp_joined), _rouge_words(ref_joined)
    scores = {}
    for n in (1, 2):
        hyp_grams, ref_grams = _ngrams(hyp, n), _ngrams(ref, n)
        scores[f"rouge-{n}"] = _f1(len(hyp_grams & ref_grams), len(hyp_grams), len(ref_grams))
    scores["rouge-l"] = _f1(_lcs_length(ref, hyp), len(hyp), len(ref))
    return scores


def bleu4(prediction: str, reference: str) -> float:
    """Character BLEU-4 in [0, 1] with brevity penalty and smoothing method 3."""
    hyp, ref = list(prediction), list(reference)
    log_sum, misses = 0.0, 0
    for n in range(1, 5):
        hyp_counts = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
        ref_counts = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        matched = sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
        total = max(1, sum(hyp_counts.values()))
        if matched == 0:
            if n == 1:
                return 0.0  # no character in common
            misses += 1
            precision = 1.0 / (2**misses * total)
        else:
            precision = matched / total
        log_sum += 0.25 * math.log(precision)
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(log_sum)


def similarity_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean {"bleu-4", "rouge-1", "rouge-2", "rouge-l"} over pairs, each x100 and rounded per sample."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    per_sample: dict[str, list[float]] = {"bleu-4": [], "rouge-1": [], "rouge-2": [], "rouge-l": []}
    for prediction, reference in zip(predictions, references):
        for key, value in rouge_scores(prediction, reference).items():
            per_sample[key].append(round(value * 100, 4))
        per_sample["bleu-4"].append(round(bleu4(prediction, reference) * 100, 4))
    return {key: (sum(values) / len(values) if values else 0.0) for key, values in per_sample.items()}
