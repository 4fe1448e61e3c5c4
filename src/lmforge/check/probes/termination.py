"""termination: greedy answers end with the stop token, and do not loop.

A fine-tune whose samples lost their end-of-turn token (a template without the stop word, a cutoff that cut it,
a chat template that drops it) learns to go on talking: every answer runs to max_new_tokens, often repeating
itself. Loss and benchmark scores hardly show it; users see it at once. Each held-out prompt is answered greedily
(max_new_tokens from the settings) and two shares are measured:

* stopped: answers that end with one of the template's stop ids before max_new_tokens (the value judged by
  fail_below / warn_below);
* looping: answers whose last `loop_repeats` x p tokens are one p-gram repeated, for some p <= loop_n (judged by
  loop_fail_above).

The base model's shares are reported beside them when there is a base to compare (`compare_base`).
"""

from __future__ import annotations

import json

from lmforge.check.probe import FAIL, PASS, PROBES, Example, Probe, ProbeResult


def loops(ids: list[int], max_period: int, repeats: int) -> bool:
    """True when the tail of `ids` is one n-gram (n <= max_period) repeated `repeats` times."""
    for period in range(1, max_period + 1):
        window = ids[-period * repeats:]
        if len(window) == period * repeats and all(window[i] == window[i % period] for i in range(len(window))):
            return True
    return False


def _shares(generations, settings) -> tuple[float, float]:
    if not generations:
        return 0.0, 0.0
    stopped = sum(g.stopped for g in generations) / len(generations)
    looping = sum(loops(g.token_ids, settings["loop_n"], settings["loop_repeats"]) for g in generations) / len(generations)
    return stopped, looping


def run_termination(ctx, settings: dict) -> ProbeResult:
    samples = ctx.samples(settings["samples"])
    limit = settings["max_new_tokens"]
    answers = ctx.generate(ctx.tuned(), [s.messages for s in samples], limit)
    stopped, looping = _shares(answers, settings)
    details = {"prompts": len(samples), "max_new_tokens": limit, "stopped": stopped, "looping": looping}
    if settings["compare_base"] and (base := ctx.base()) is not None:
        base_stopped, base_looping = _shares(ctx.generate(base, [s.messages for s in samples], limit), settings)
        details.update(base_stopped=base_stopped, base_looping=base_looping)
    # the worst first: looping, then running to the limit
    ranked = sorted(range(len(answers)), key=lambda i: (
        not loops(answers[i].token_ids, settings["loop_n"], settings["loop_repeats"]), answers[i].stopped))
    examples = []
    for i in ranked[:settings["examples"]]:
        a = answers[i]
        if a.stopped and not loops(a.token_ids, settings["loop_n"], settings["loop_repeats"]):
            break
        looped = loops(a.token_ids, settings["loop_n"], settings["loop_repeats"])
        examples.append(Example(samples[i].source, json.dumps(samples[i].messages, ensure_ascii=False),
                                a.text or f"(no text; ids {a.token_ids})",
                                expected=samples[i].answer or None,
                                note=("loops; " if looped else "") + ("stopped" if a.stopped else
                                                                      f"no stop token in {limit} tokens")))
    result = ProbeResult.judge("termination", stopped, settings, unit="share of greedy answers ended by the stop "
                               "token", examples=examples, details=details)
    result.threshold += f"; looping FAIL > {settings['loop_fail_above']:g}"
    if looping > settings["loop_fail_above"]:
        result.verdict = FAIL
    result.details["looping_verdict"] = FAIL if looping > settings["loop_fail_above"] else PASS
    return result


PROBES.add("termination", Probe(
    name="termination",
    summary="greedy answers end with the stop token before max_new_tokens and do not loop",
    run=run_termination,
    defaults={"fail_below": 0.8, "warn_below": 0.95, "loop_fail_above": 0.2, "loop_n": 4, "loop_repeats": 3,
              "compare_base": True, "examples": 5}))
