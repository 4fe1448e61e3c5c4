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


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest choice, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
