"""Per-item scores and their aggregates, defined as lm-evaluation-harness defines them.

    per_item = item_metrics(spec, item)          # {"acc": 1.0, "acc_norm": 0.0} for one multiple-choice item
    aggregate("acc", [1.0, 0.0, 1.0])            # (0.667, 0.333): the mean and its standard error

multiple_choice: `acc` compares the argmax of the choices' log-likelihoods with the gold index; `acc_norm`
divides each log-likelihood by its choice's length in characters (the choice text, without the target
delimiter: lm-eval's `len(choice)`), `acc_bytes` by its length in UTF-8 bytes; `exact_match` is whether
greedy decoding would write the gold choice. loglikelihood_rolling: word_perplexity = exp(-sum ll / sum words),
byte_perplexity = exp(-sum ll / sum bytes), bits_per_byte = -sum ll / sum bytes / ln 2. loglikelihood:
perplexity = exp(-mean ll). Standard errors: the sample standard deviation over sqrt(n) for means (lm-eval's
`mean_stderr`); for perplexity the delta method, exp(-mean) x stderr(mean) (lm-eval bootstraps it, so the two
differ in later digits); none for the corpus-weighted ratios (lm-eval reports N/A too).
"""

from __future__ import annotations

import math
import re
import string

from lmforge.eval.tasks.filters import apply_filter
from lmforge.eval.tasks.spec import TaskSpec
from lmforge.eval.tasks.task import Item

WEIGHTED = {"word_perplexity", "byte_perplexity", "bits_per_byte"}
"""Metrics whose items are (log-likelihood, weight) pairs, aggregated as one corpus-level ratio."""


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, as numpy's argmax


def exact_match(prediction: str, reference: str, *, ignore_case: bool = False, ignore_punctuation: bool = False,
                regexes_to_ignore: list[str] | None = None, ignore_numbers: bool = False) -> float:
    """1.0 when the strings are equal after the optional normalisations (HF evaluate's exact_match, lm-eval's)."""
    for pattern in regexes_to_ignore or ():
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    if ignore_numbers:
        table = str.maketrans("", "", string.digits)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return float(prediction == reference)


def item_metrics(spec: TaskSpec, item: Item) -> dict[str, object]:
    """{metric (with ",filter" for generate_until): value} for one scored item; `item.results` filled."""
    kind = spec.output_type
    if kind == "multiple_choice":
        lls = [ll for ll, _ in item.results]
        golds = item.gold if isinstance(item.gold, list) else [item.gold]
        chars = [float(len(c)) for c in item.choices]
        raw_bytes = [float(len(c.encode("utf-8"))) for c in item.choices]
        preds = {"acc": _argmax(lls), "acc_norm": _argmax([ll / n for ll, n in zip(lls, chars)]),
                 "acc_bytes": _argmax([ll / n for ll, n in zip(lls, raw_bytes)])}
        values: dict[str, object] = {m: float(preds[m] in golds) for m in preds if m in spec.metrics}
        if "exact_match" in spec.metrics:
            values["exact_match"] = float(any(item.results[g][1] for g in golds))
        return values
    if kind == "loglikelihood":
        ll, greedy = item.results[0]
        return {**({"perplexity": ll} if "perplexity" in spec.metrics else {}),
                **({"acc": float(greedy)} if "acc" in spec.metrics else {})}
    if kind == "loglikelihood_rolling":
        (ll,) = item.results
        text = item.gold
        weights = {"word_perplexity": len(re.split(r"\s+", text)), "byte_perplexity": len(text.encode("utf-8")),
                   "bits_per_byte": len(text.encode("utf-8"))}
        return {m: (ll, weights[m]) for m in spec.metrics}
    # generate_until: every filter pipeline scores the same generation
    (generated,) = item.results
    values = {}
    for name, steps in spec.filters.items():
        answer = apply_filter(steps, generated)
        golds = item.gold if isinstance(item.gold, list) else [item.gold]
        for metric in spec.metrics:
            kwargs = spec.metric_kwargs.get(metric, {})
            values[f"{metric},{name}"] = float(any(exact_match(answer, g, **kwargs) for g in golds))
    return values


def aggregate(metric: str, values: list) -> tuple[float, float | None]:
    """(value, standard error or None) of one metric over the items."""
    name = metric.split(",")[0]
    if name in WEIGHTED:
        total_ll = sum(ll for ll, _ in values)
        total_weight = sum(w for _, w in values)
        mean = total_ll / total_weight
        return (-mean / math.log(2) if name == "bits_per_byte" else math.exp(-mean)), None
    mean = sum(values) / len(values)
    stderr = _mean_stderr(values)
    if name == "perplexity":
        return math.exp(-mean), (math.exp(-mean) * stderr if stderr is not None else None)
    return mean, stderr


def _mean_stderr(values: list[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
