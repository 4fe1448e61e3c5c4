"""A task's documents as text, the way lm-evaluation-harness writes them: `DocFormatter` and `build_context`.

    fmt = DocFormatter(spec, columns=["question", "choices", "answer"])
    fmt.text(doc, 0), fmt.choices(doc, 0), fmt.target(doc, 0)
    build_context(spec, fmt, doc, 0, shots)      # description + shots ("Q A" + "\\n\\n" each) + the question

doc_to_text / doc_to_target / doc_to_choice are each a column name (the value as stored), a Jinja template
(StrictUndefined: a missing field is an error, as in lm-eval), a list (choices) or an integer. A rendered
target that is all digits becomes an index when the task has choices, and "[...]" is read as a list: lm-eval's
rules, which decide what `acc` compares against.
"""

from __future__ import annotations

import ast
import re

import jinja2

from lmforge.errors import DataError
from lmforge.eval.tasks.spec import TaskSpec


def _regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    return re.sub(pattern, repl, string, count=count)


# keep_trailing_newline: a template ending in "\n" keeps it (lm-eval's environment does the same)
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)  # noqa: S701 - plain text, not HTML
_ENV.filters["regex_replace"] = _regex_replace


class DocFormatter:
    """The doc_to_* keys of one task, compiled once; errors name the task file, key, template and record."""

    def __init__(self, spec: TaskSpec, columns: list[str]):
        self.spec = spec
        self.columns = set(columns)
        self._compiled: dict[str, jinja2.Template] = {}

    def render(self, template: str, doc: dict, key: str, index: int) -> str:
        where = f"{self.spec.path}: {key}"
        try:
            compiled = self._compiled.get(template) or self._compiled.setdefault(template, _ENV.from_string(template))
        except jinja2.TemplateSyntaxError as exc:
            raise DataError(f"{where}: Jinja syntax error ({exc.message}, line {exc.lineno}) in template "
                            f"{template!r}") from None
        try:
            return compiled.render(**doc)
        except jinja2.UndefinedError as exc:
            raise DataError(f"{where}: template {template!r} on record {index}: {exc.message} (the record's fields: "
                            f"{', '.join(sorted(doc))})") from None
        except Exception as exc:  # noqa: BLE001 - any error inside a user's template is the user's to fix
            raise DataError(f"{where}: template {template!r} on record {index}: {type(exc).__name__}: {exc}") from None

    def text(self, doc: dict, index: int) -> str | int:
        value = self.spec.doc_to_text
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise DataError(f"{self.spec.path}: doc_to_text must be a column name or a Jinja template, got {value!r}")
        if value in self.columns:
            return doc[value]
        text = self.render(value, doc, "doc_to_text", index)
        return int(text) if text.isdigit() and self.spec.doc_to_choice is not None else text

    def target(self, doc: dict, index: int) -> int | str | list:
        value = self.spec.doc_to_target
        if isinstance(value, (int, list)) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise DataError(f"{self.spec.path}: doc_to_target must be a column name or a Jinja template, got {value!r}")
        if value in self.columns:
            return doc[value]
        text = self.render(value, doc, "doc_to_target", index)
        if text.isdigit() and self.spec.doc_to_choice is not None:
            return int(text)
        if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
            try:
                return ast.literal_eval(text)
            except (SyntaxError, ValueError):
                return text
        return text

    def choices(self, doc: dict, index: int) -> list[str]:
        value = self.spec.doc_to_choice
        if isinstance(value, dict):
            return [str(v) for v in value.values()]
        if isinstance(value, list):
            return [str(v) for v in value]
        if not isinstance(value, str):
            raise DataError(f"{self.spec.path}: doc_to_choice must be a column, a list or a Jinja template, got {value!r}")
        if value in self.columns:
            found = doc[value]
        else:
            text = self.render(value, doc, "doc_to_choice", index)
            try:
                found = ast.literal_eval(text)  # a template renders a Python list literal, e.g. {{choices.text}}
            except (SyntaxError, ValueError):
                raise DataError(f"{self.spec.path}: doc_to_choice: template {value!r} on record {index} gave "
                                f"{text!r}, not a list") from None
        if not isinstance(found, (list, tuple)) or not found:
            raise DataError(f"{self.spec.path}: doc_to_choice on record {index} gave {found!r}, not a non-empty list")
        return [str(c) for c in found]

    def description(self, doc: dict, index: int) -> str:
        value = self.spec.description
        if not value:
            return ""
        return str(doc[value]) if value in doc else self.render(value, doc, "description", index)


def answer_text(fmt: DocFormatter, doc: dict, index: int) -> str | None:
    """A few-shot example's answer as written after its question, or None when it has none (lm-eval's rule:
    an index into the choices, the first of several targets, or the target text)."""
    target = fmt.target(doc, index)
    if target is None or target == "":
        return None
    if isinstance(target, list):
        return str(target[0])
    if isinstance(target, int) and fmt.spec.doc_to_choice is not None:
        choices = fmt.choices(doc, index)
        if not 0 <= target < len(choices):
            raise DataError(f"{fmt.spec.path}: few-shot record {index}: target {target} is outside its "
                            f"{len(choices)} choices")
        return choices[target]
    return str(target)


def build_context(spec: TaskSpec, fmt: DocFormatter, doc: dict, index: int, shots: list[tuple[int, dict]]) -> str:
    """description + each shot as question, target delimiter, answer, fewshot delimiter + the question.

    The description is written as is, with no delimiter after it (lm-eval's plain-text rendering of its
    system message): task files end it with "\\n\\n" themselves.
    """
    parts = [fmt.description(doc, index)]
    for shot_index, shot in shots:
        question = _question(fmt, shot, shot_index)
        answer = answer_text(fmt, shot, shot_index)
        if answer is None:
            parts.append(question)
        else:
            parts += [question, spec.target_delimiter, answer, spec.fewshot_delimiter]
    parts.append(_question(fmt, doc, index))
    return "".join(parts)


def _question(fmt: DocFormatter, doc: dict, index: int) -> str:
    question = fmt.text(doc, index)
    if not isinstance(question, str):
        raise DataError(f"{fmt.spec.path}: doc_to_text on record {index} gave {question!r}, not text "
                        "(tasks with several inputs per record are not supported)")
    return question


def coerce_gold(fmt: DocFormatter, doc: dict, index: int, choices: list[str]) -> int | list[int]:
    """The index (or indices) of the right choice; a target outside the choices is an error, never a silent 0."""
    target = fmt.target(doc, index)
    golds = target if isinstance(target, list) else [target]
    indices = []
    for gold in golds:
        if isinstance(gold, str) and gold in choices:
            indices.append(choices.index(gold))
        elif isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(choices):
            indices.append(gold)
        else:
            raise DataError(f"{fmt.spec.path}: record {index}: doc_to_target gave {gold!r}, which is not one of its "
                            f"{len(choices)} choices {choices!r} (nor an index 0..{len(choices) - 1})")
    return indices if isinstance(target, list) else indices[0]


def fewshot_sampler_pick(rnd, pool: list[dict], n: int, exclude: dict | None, sampler: str = "default") -> list[int]:
    """Indices of `n` shots drawn like lm-eval's default sampler: `rnd.sample(pool, n)`, or with `exclude` given,
    n + 1 drawn, that document (when drawn) taken out, and the first n kept. `first_n`: the first n records,
    every copy of `exclude` left out (lm-eval's FirstNSampler; `rnd` is not used)."""
    if sampler == "first_n":
        kept = [i for i, doc in enumerate(pool) if exclude is None or doc != exclude]
        if n > len(kept):
            raise DataError(f"{n} few-shot examples asked for, but the few-shot split has only {len(kept)} records"
                            + (" besides the scored one" if exclude is not None else ""))
        return kept[:n]
    need = n + (1 if exclude is not None else 0)
    if need > len(pool):
        raise DataError(f"{n} few-shot examples asked for, but the few-shot split has only {len(pool)} records"
                        + (f" (lm-eval draws {need} here, to leave the scored record out)" if exclude is not None else ""))
    if exclude is None:
        return rnd.sample(range(len(pool)), n)
    drawn = rnd.sample(range(len(pool)), n + 1)
    return [i for i in drawn if pool[i] != exclude][:n]

