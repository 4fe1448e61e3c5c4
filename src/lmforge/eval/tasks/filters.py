"""lm-eval's answer filters over generated text: `apply_filter(steps, text)`.

A `regex` step keeps the `group_select`-th match (of a pattern with groups: the first non-empty group),
stripped, or `fallback` ("[invalid]") when nothing matches; `take_first` is a no-op here because lmforge
generates one answer per item. Each filter pipeline's name becomes a metric suffix: exact_match,strict-match.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from lmforge.errors import ConfigError

if TYPE_CHECKING:  # spec.py checks patterns through this module when it reads a task file
    from lmforge.eval.tasks.spec import FilterStep


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"filter_list: regex_pattern {pattern!r} is not a valid regular expression: {exc}") from None


def apply_filter(steps: tuple[FilterStep, ...], text: str) -> str:
    for step in steps:
        if step.function == "regex":
            matches = _compiled(step.regex_pattern).findall(text)
            if not matches:
                text = step.fallback
                continue
            match = matches[step.group_select]
            if isinstance(match, tuple):  # several groups: the first that matched something
                match = next((m for m in match if m), step.fallback)
            text = match.strip()
        elif step.function == "lowercase":
            text = text.lower()
        elif step.function == "uppercase":
            text = text.upper()
        elif step.function == "remove_whitespace":
            text = text.strip()
    return text


def check_patterns(pipelines: dict[str, tuple[FilterStep, ...]], where: str) -> None:
    """Compile every regex once up front, so a bad pattern is reported before the model loads."""
    for steps in pipelines.values():
        for step in steps:
            if step.function == "regex":
                try:
                    _compiled(step.regex_pattern)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
