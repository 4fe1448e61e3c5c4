"""Probe `prompt_edits`: does the tuned model answer the prompt it is given, or recite an answer it learned?

    check:
      prompt_edits: {samples: 16, answer_fn: letter_shift}

What: prompts of the run's own data (`ctx.samples`), each with one key span of its last user message replaced
by a different value: a number (a different number of as many digits), else a capitalised name inside a
sentence (another name), else, in a long input (>= `long_input` characters), its longest sentence (another
sentence). A task with a computable answer names its own span and answer (`ANSWER_FUNCTIONS`; the `answer_fn`
setting names one, `auto` (the default) uses the first whose prompt shape matches, `none`: generic edits only;
`letter_shift`, the demo's task, edits the letter sequence). Each edited prompt, with the
record it came from, is listed in the details (`edits`); the choice of span and replacement is deterministic
for the check's seed.

Why: a model that memorised its training answers repeats them when the question changes under it; exact-match
scores on the training distribution cannot tell that from having learned the task.

How: greedy answers to the original and the edited prompt. An edit "should change the answer" when the
model's original answer contains the replaced span (as whole words), or when the answer function gives a different
answer for the edited prompt. Among those, an edited answer is "recited" when it equals the original answer
(whitespace-normalised): the model ignored the edit. value = recited / edits that should change the answer
(FAIL above `fail_above`). With an answer function the details also give the accuracy (exact match with the
computed answer) on the original and on the edited prompts.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from lmforge.check.probe import PROBES, SKIP, Example, Probe, ProbeResult

NAME = "prompt_edits"

NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ivan", "Julia", "Kofi", "Lena",
         "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tara"]
SENTENCES = ["The committee postponed the decision until the following spring.",
             "A small boat drifted past the harbour wall at dawn.",
             "The recipe calls for two eggs and a cup of flour.",
             "Nobody in the village remembered who had planted the old oak.",
             "The train to the coast was delayed by a fallen tree."]
NUMBER = re.compile(r"\d+")
# a capitalised word inside a sentence: a name, not a sentence start
ENTITY = re.compile(r"(?<=[a-z,;:] )[A-Z][a-z]+\b")
SENTENCE = re.compile(r"[^.!?\n]+[.!?]")


@dataclass(frozen=True)
class Edit:
    kind: str  # number | entity | sentence | the answer function's name
    span: str  # the replaced text
    replacement: str
    prompt: str  # the edited user message


def _replace_at(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def generic_edit(text: str, rng: random.Random, long_input: int = 200) -> Edit | None:
    """Replace a number, else a name inside a sentence, else (in a long input) its longest sentence."""
    numbers = list(NUMBER.finditer(text))
    if numbers:
        match = rng.choice(numbers)
        digits = len(match.group())
        low = 10 ** (digits - 1) if digits > 1 else 0
        new = match.group()
        while new == match.group():
            new = str(rng.randint(low, 10 ** digits - 1))
        return Edit("number", match.group(), new, _replace_at(text, match.start(), match.end(), new))
    entities = list(ENTITY.finditer(text))
    if entities:
        match = rng.choice(entities)
        new = rng.choice([n for n in NAMES if n != match.group()])
        return Edit("entity", match.group(), new, _replace_at(text, match.start(), match.end(), new))
    if len(text) >= long_input:
        sentences = list(SENTENCE.finditer(text))
        if sentences:
            match = max(sentences, key=lambda m: len(m.group().strip()))
            start = match.start() + len(match.group()) - len(match.group().lstrip())
            new = rng.choice([s for s in SENTENCES if s != match.group().strip()])
            return Edit("sentence", match.group().strip(), new, _replace_at(text, start, match.end(), new))
    return None


# -- tasks whose answer is computable from the prompt -----------------------------------------------------------
@dataclass(frozen=True)
class AnswerFunction:
    """A task whose answer follows from the prompt: `edit` picks and replaces its key span (None: the prompt is
    not of this task), `answer` computes the expected answer of a prompt (None: it cannot)."""

    edit: Callable[[str, random.Random], Edit | None]
    answer: Callable[[str], str | None]


LETTERS = string.ascii_lowercase
LETTER_SEQUENCE = re.compile(r"(?<=: )[a-z](?: [a-z])*\s*$")


def _shift_edit(text: str, rng: random.Random) -> Edit | None:
    match = LETTER_SEQUENCE.search(text)
    if not match:
        return None
    span = match.group().strip()
    new = span
    while new == span:
        new = " ".join(rng.choice(LETTERS) for _ in span.split())
    return Edit("letter_shift", span, new, _replace_at(text, match.start(), match.start() + len(span), new))


def _shift_answer(text: str) -> str | None:
    """The demo's task (lmforge.demo): "Shift each letter by one: k t p a" -> "Shifted: l u q b"."""
    match = LETTER_SEQUENCE.search(text)
    if not match:
        return None
    return "Shifted: " + " ".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in match.group().split())


ANSWER_FUNCTIONS: dict[str, AnswerFunction] = {"letter_shift": AnswerFunction(_shift_edit, _shift_answer)}


@dataclass(frozen=True)
class EditedSample:
    source: str  # the record the prompt came from
    messages: list[dict]  # the original prompt turns
    edited: list[dict]  # the same turns, the last user message edited
    edit: Edit
    reference: str  # the record's answer
    task: str | None  # the answer function that edited it (None: a generic edit, no computable answer)


def edit_samples(samples: list, rng: random.Random, answer_fn: str | None = None,
                 long_input: int = 200) -> tuple[list[EditedSample], list[str]]:
    """(the samples with an editable span, edited; the sources of those without one). Deterministic for the
    rng's state: samples are taken in order, each draws from the rng once it is editable."""
    tasks = list(ANSWER_FUNCTIONS) if answer_fn == "auto" else [answer_fn] if answer_fn else []
    edited, skipped = [], []
    for sample in samples:
        turns = [dict(m) for m in sample.messages]
        last = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
        if last is None:
            skipped.append(sample.source)
            continue
        text = turns[last]["content"]
        edit, task = None, None
        for name in tasks:
            if ANSWER_FUNCTIONS[name].answer(text) is not None:
                edit, task = ANSWER_FUNCTIONS[name].edit(text, rng), name
                break
        edit = edit or generic_edit(text, rng, long_input)
        if edit is None:
            skipped.append(sample.source)
            continue
        turns[last]["content"] = edit.prompt
        edited.append(EditedSample(sample.source, list(sample.messages), turns, edit, sample.answer,
                                   task if edit.kind == task else None))
    return edited, skipped


def _mentions(text: str, span: str) -> bool:
    """`span` in `text` as a whole word or words ("1" is not in "12")."""
    return re.search(rf"(?<!\w){re.escape(span)}(?!\w)", text) is not None


def _last_user(turns: list[dict]) -> str:
    return next(m["content"] for m in reversed(turns) if m.get("role") == "user")


def _norm(text: str) -> str:
    return " ".join(text.split())


def run_prompt_edits(ctx, settings: dict) -> ProbeResult:
    answer_fn = settings.get("answer_fn")
    answer_fn = None if answer_fn in (None, "none") else answer_fn  # YAML: a string setting keeps a string
    if answer_fn and answer_fn != "auto" and answer_fn not in ANSWER_FUNCTIONS:
        from lmforge.errors import ConfigError

        raise ConfigError(f"check: prompt_edits.answer_fn: unknown {answer_fn!r}; choose one of "
                          f"{', '.join(sorted(ANSWER_FUNCTIONS))}, auto or none")
    samples = ctx.samples(int(settings["samples"]))
    edited, unedited = edit_samples(samples, ctx.rng(NAME), answer_fn, int(settings["long_input"]))
    if not edited:
        return ProbeResult.skipped(NAME, f"none of {len(samples)} prompts has a number, name or long sentence to "
                                         "edit (set prompt_edits.answer_fn for a task of your own)")
    engine, max_new = ctx.tuned(), settings["max_new_tokens"]
    outputs = ctx.generate(engine, [e.messages for e in edited] + [e.edited for e in edited], max_new_tokens=max_new)
    originals, changed = outputs[:len(edited)], outputs[len(edited):]
    rows, recited, eligible = [], 0, 0
    right = {"original": [], "edited": []}
    for item, before, after in zip(edited, originals, changed):
        compute = ANSWER_FUNCTIONS[item.task].answer if item.task else None
        expected_before = compute(_last_user(item.messages)) if compute else None
        expected_after = compute(_last_user(item.edited)) if compute else None
        should_change = _mentions(before.text, item.edit.span) or (
            expected_before is not None and expected_after is not None and expected_before != expected_after)
        is_recited = should_change and _norm(after.text) == _norm(before.text)
        eligible += should_change
        recited += is_recited
        if expected_after is not None:
            right["original"].append(_norm(before.text) == _norm(expected_before or ""))
            right["edited"].append(_norm(after.text) == _norm(expected_after))
        rows.append({"source": item.source, "kind": item.edit.kind, "span": item.edit.span,
                     "replacement": item.edit.replacement, "edited_prompt": item.edit.prompt,
                     "original_answer": before.text, "edited_answer": after.text, "expected": expected_after,
                     "should_change": should_change, "recited": is_recited})
    details: dict = {"edits": rows, "edited": len(edited), "should_change": eligible, "recited": recited,
                     "not_editable": unedited}
    if right["edited"]:
        details["accuracy_original"] = sum(right["original"]) / len(right["original"])
        details["accuracy_edited"] = sum(right["edited"]) / len(right["edited"])
    if not eligible:
        return ProbeResult(NAME, SKIP, None, "no edit touched a span the answer depends on (the original answers "
                           "do not contain the edited spans)", "", [], details)
    worst = sorted(rows, key=lambda r: (not r["recited"], r["expected"] is None or r["edited_answer"] == r["expected"]))
    examples = [Example(r["source"], r["edited_prompt"], r["edited_answer"], r["expected"],
                        note=f"{r['span']!r} -> {r['replacement']!r}; original answer {r['original_answer']!r}"
                             + (" (recited)" if r["recited"] else ""))
                for r in worst[:settings.get("examples", 5)]]
    return ProbeResult.judge(NAME, recited / eligible, settings,
                             unit="share of edits that should change the answer answered with the unedited "
                                  "prompt's answer",
                             examples=examples, details=details)


PROBES.add(NAME, Probe(
    name=NAME, summary="edited training/held-out prompts (a number, name or sentence replaced): recited answers",
    run=run_prompt_edits,
    defaults={"samples": 16, "max_new_tokens": 32, "answer_fn": "auto", "long_input": 200, "fail_above": 0.5,
              "warn_above": 0.25, "examples": 5}))
