"""Errors written for users.

A `UserError` is something the user can fix (a bad key, a missing file, a malformed record). The CLI prints
its message in one or two lines and exits non-zero without a traceback; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem in the user's config, data or model that the user can fix."""

    exit_code = 1


class ConfigError(UserError):
    """A config key is unknown, mistyped or contradicts another key."""

    exit_code = 2


class DataError(UserError):
    """A dataset file, registry entry or record cannot be used."""


class ModelError(UserError):
    """A model or tokenizer directory cannot be loaded or does not fit the config."""


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps."""
    previous2, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if previous2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice `name` is most likely a slip of: a few typed characters off (about one per four), or the
    same name with a word missing or extra (`per_device_batch_size`), or cut short (`format`); None when nothing
    is that close."""
    candidates = list(choices)
    if not candidates:
        return None
    allowed = max(1, min(3, len(name) // 4))
    best = min(candidates, key=lambda c: (edit_distance(name.lower(), c.lower()), c))
    if edit_distance(name.lower(), best.lower()) <= allowed:
        return best
    lowered = name.lower()
    prefixed = [c for c in candidates if len(lowered) >= 4 and c.lower().startswith(lowered)]
    if len(prefixed) == 1:  # a name cut short: 'format' for 'formatting'
        return prefixed[0]
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.85)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for a genuinely close choice, or '' when nothing is close."""
    match = closest(name, choices)
    return f" (did you mean '{match}'?)" if match else ""
