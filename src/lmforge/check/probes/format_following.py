"""Probe `format_following`: does the tuned model still follow explicit output-format instructions?

    check:
      probes: [format_following]
      format_following: {prompts: 16, max_drop: 0.25}

What: a generated set of prompts (`format_prompts`, deterministic for the check's seed) that each ask for one
format — a JSON object with given keys, a markdown table of given rows and columns, exactly N bullet points, a
one-word answer — half zero-shot, half few-shot (one worked example turn before the question). Each greedy
answer is checked by a parser (`FORMATS[kind].check`), never by a model.

Why: fine-tuning on one narrow answer shape often costs the general instruction following the base had; a
drop against the base is the sign, the absolute rate of a small base model says little on its own.

How: pass rate = answers the parser accepts / prompts, for the tuned model and the base model on the same
prompts. The verdict is on the change, tuned - base (FAIL when the tuned rate is more than `max_drop` below
the base's, WARN beyond `warn_drop`); without a base model the tuned rate alone is judged, WARN-only
(`warn_below`). The details give both rates and each format's rate.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from lmforge.check.probe import PROBES, Example, Probe, ProbeResult

NAME = "format_following"

TOPICS = ["a city", "a book", "a planet", "a fruit", "a river", "a car", "a song", "a tool", "a bird", "a sport"]
KEYS = ["name", "color", "size", "year", "owner", "price", "country", "rating", "weight", "type"]
COLUMNS = ["Name", "Color", "Size", "Year", "Price", "Country"]
ONE_WORD = [("What is the opposite of hot?", "Cold"), ("What color is the sky on a clear day?", "Blue"),
            ("Which animal barks?", "Dog"), ("What do bees make?", "Honey"), ("What is frozen water called?", "Ice"),
            ("What is the capital of France?", "Paris"), ("Which season follows winter?", "Spring"),
            ("What do you call a baby cat?", "Kitten")]


@dataclass(frozen=True)
class FormatPrompt:
    kind: str  # json | table | bullets | one_word
    source: str  # "generated:<seed>:<i>"
    messages: list[dict]  # the turns to answer (a worked example first when few-shot)
    spec: dict  # what the parser checks: keys, rows/columns, count
    few_shot: bool


# -- parsers: each returns "" when the answer has the format, else what is wrong ---------------------------------
def _strip_fence(text: str) -> str:
    fenced = re.search(r"```(?:\w+)?\s*\n?(.*?)```", text, re.S)
    return (fenced.group(1) if fenced else text).strip()


def check_json(text: str, spec: dict) -> str:
    body = _strip_fence(text)
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return "no JSON object"
    try:
        value = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg})"
    if not isinstance(value, dict):
        return "not a JSON object"
    if set(value) != set(spec["keys"]):
        return f"keys {sorted(value)} != {sorted(spec['keys'])}"
    return ""


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def check_table(text: str, spec: dict) -> str:
    lines = [line for line in _strip_fence(text).splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return "no markdown table"
    header, separator, rows = _cells(lines[0]), _cells(lines[1]), [_cells(line) for line in lines[2:]]
    if not all(re.fullmatch(r":?-{3,}:?", cell) for cell in separator):
        return "no header separator row (| --- |)"
    if len(header) != spec["columns"] or len(separator) != spec["columns"]:
        return f"{len(header)} columns, asked for {spec['columns']}"
    if len(rows) != spec["rows"]:
        return f"{len(rows)} rows, asked for {spec['rows']}"
    if any(len(row) != spec["columns"] for row in rows):
        return "a row with a different number of cells"
    return ""


BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")


def check_bullets(text: str, spec: dict) -> str:
    count = sum(1 for line in text.splitlines() if BULLET.match(line))
    return "" if count == spec["count"] else f"{count} bullet points, asked for {spec['count']}"


def check_one_word(text: str, spec: dict) -> str:
    words = text.strip().strip(".!\"'`*").split()
    if len(words) != 1:
        return f"{len(words)} words"
    return "" if re.fullmatch(r"[\w-]+", words[0]) else f"not a word: {words[0]!r}"


# -- prompt writers: (question, spec, a worked example answer for the few-shot variant) --------------------------
def _json_prompt(rng: random.Random) -> tuple[str, dict, str]:
    keys = rng.sample(KEYS, rng.randint(2, 3))
    question = (f"Describe {rng.choice(TOPICS)} as a JSON object with exactly the keys "
                f"{', '.join(json.dumps(k) for k in keys)}. Answer with the JSON only.")
    return question, {"keys": keys}, json.dumps({k: f"{k} value" for k in keys})


def _table_prompt(rng: random.Random) -> tuple[str, dict, str]:
    columns, rows = rng.sample(COLUMNS, rng.randint(2, 3)), rng.randint(2, 3)
    question = (f"Write a markdown table about {rng.choice(TOPICS)}s with the columns {', '.join(columns)} and "
                f"exactly {rows} rows. Answer with the table only.")
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(f"{c.lower()} {r + 1}" for c in columns) + " |" for r in range(rows)]
    return question, {"columns": len(columns), "rows": rows}, "\n".join(lines)


def _bullets_prompt(rng: random.Random) -> tuple[str, dict, str]:
    count = rng.randint(2, 5)
    question = (f"List exactly {count} facts about {rng.choice(TOPICS)} as markdown bullet points (\"- \"), "
                "one per line, nothing else.")
    return question, {"count": count}, "\n".join(f"- fact {i + 1}" for i in range(count))


def _one_word_prompt(rng: random.Random) -> tuple[str, dict, str]:
    question, answer = rng.choice(ONE_WORD)
    return f"{question} Answer with one word only.", {}, answer


@dataclass(frozen=True)
class Format:
    write: Callable[[random.Random], tuple[str, dict, str]]
    check: Callable[[str, dict], str]


FORMATS: dict[str, Format] = {
    "json": Format(_json_prompt, check_json),
    "table": Format(_table_prompt, check_table),
    "bullets": Format(_bullets_prompt, check_bullets),
    "one_word": Format(_one_word_prompt, check_one_word),
}


def format_prompts(rng: random.Random, count: int, seed: int) -> list[FormatPrompt]:
    """`count` prompts cycling through the formats, zero-shot and few-shot in turn; the same for the same rng
    state. A few-shot prompt carries one worked example of the same format (a different question) first."""
    prompts = []
    kinds = list(FORMATS)
    for i in range(count):
        kind, few_shot = kinds[i % len(kinds)], (i // len(kinds)) % 2 == 1
        question, spec, _ = FORMATS[kind].write(rng)
        messages = [{"role": "user", "content": question}]
        if few_shot:
            shot_question, _, shot_answer = FORMATS[kind].write(rng)
            while shot_question == question:  # the worked example must not give the answer away
                shot_question, _, shot_answer = FORMATS[kind].write(rng)
            messages = [{"role": "user", "content": shot_question}, {"role": "assistant", "content": shot_answer},
                        *messages]
        prompts.append(FormatPrompt(kind, f"generated:{seed}:{i}", messages, spec, few_shot))
    return prompts


def _pass_rates(failures: list[str], prompts: list[FormatPrompt]) -> dict[str, float]:
    rates = {"all": sum(not f for f in failures) / len(failures)}
    for key, select in [*((k, lambda p, k=k: p.kind == k) for k in FORMATS),
                        ("zero_shot", lambda p: not p.few_shot), ("few_shot", lambda p: p.few_shot)]:
        chosen = [not f for f, p in zip(failures, prompts) if select(p)]
        if chosen:
            rates[key] = sum(chosen) / len(chosen)
    return rates


def run_format_following(ctx, settings: dict) -> ProbeResult:
    prompts = format_prompts(ctx.rng(NAME), int(settings["prompts"]), ctx.seed)
    conversations = [p.messages for p in prompts]
    tuned = ctx.generate(ctx.tuned(), conversations, max_new_tokens=settings["max_new_tokens"])
    failures = [FORMATS[p.kind].check(g.text, p.spec) for p, g in zip(prompts, tuned)]
    rates = _pass_rates(failures, prompts)
    details: dict = {"tuned_pass_rate": rates, "prompts": len(prompts)}
    examples = [Example(p.source, p.messages[-1]["content"], g.text, note=f"{p.kind}: {why}")
                for p, g, why in zip(prompts, tuned, failures) if why][:settings.get("examples", 5)]
    base = ctx.base()
    if base is None:
        details["base"] = "no base model: the tuned pass rate is judged alone (WARN only)"
        return ProbeResult.judge(NAME, rates["all"], {"warn_below": settings["warn_below"]},
                                 unit="share of format instructions followed (no base to compare)",
                                 examples=examples, details=details)
    base_out = ctx.generate(base, conversations, max_new_tokens=settings["max_new_tokens"])
    base_rates = _pass_rates([FORMATS[p.kind].check(g.text, p.spec) for p, g in zip(prompts, base_out)], prompts)
    details["base_pass_rate"] = base_rates
    change = rates["all"] - base_rates["all"]
    return ProbeResult.judge(NAME, change, {"fail_below": -settings["max_drop"], "warn_below": -settings["warn_drop"]},
                             unit=f"tuned - base pass rate on format instructions (tuned {rates['all']:.2f}, "
                                  f"base {base_rates['all']:.2f})", examples=examples, details=details)


PROBES.add(NAME, Probe(
    name=NAME, summary="JSON / markdown table / N bullets / one word on request, parsed, against the base model",
    run=run_format_following,
    defaults={"prompts": 16, "max_new_tokens": 64, "max_drop": 0.25, "warn_drop": 0.1, "warn_below": 0.5,
              "examples": 5}))
