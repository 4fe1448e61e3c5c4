"""The Train tab's form: the config keys as fields, and validation with the CLI's own rules and messages.

    schema()                       # {"groups": [{"name", "title", "keys": [{"name", "type", "default", "help"}]}]}
    check({"stage": "sft", ...})   # {"ok": False, "errors": {"learning_rate": "..."}, "general": [], "yaml": "..."}

Validation is `build_config`'s light half (key names, types, ranges, every cross-field rule of
config/validate.py), which imports neither torch nor transformers, so it can run at every keystroke. A message is
shown beside the first key it quotes; one that quotes none is a general message.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

from lmforge.config.help import GROUP_TITLES, group_keys, group_names
from lmforge.errors import UserError

_QUOTED = re.compile(r"'([A-Za-z_][A-Za-z0-9_.]*)'")
_LEADING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")


def schema() -> dict:
    groups = []
    for name in group_names():
        keys = [{"name": k.name, "type": k.type, "default": k.default, "help": k.help} for k in group_keys(name)]
        groups.append({"name": name, "title": GROUP_TITLES.get(name, name), "keys": keys})
    return {"groups": groups}


@functools.cache
def known_keys() -> frozenset[str]:
    return frozenset(key["name"] for group in schema()["groups"] for key in group["keys"])


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values without empty fields (an empty field means the key's default), text read as the command
    line reads `key=value` (YAML scalars: `2` a number, `true` a boolean, `[a, b]` a list)."""
    from lmforge.config.loader import parse_overrides

    typed = {}
    for key, value in values.items():
        if value in ("", None):
            continue
        typed[key] = parse_overrides([f"{key}={value}"])[key] if isinstance(value, str) else value
    return typed


def to_yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(clean(values), sort_keys=False, allow_unicode=True)


def check(values: dict[str, Any]) -> dict:
    """{"ok", "errors": {key: message}, "general": [message], "yaml"} for the form's values."""
    from lmforge.config.loader import validate_light

    values = clean(values)
    errors: dict[str, str] = {}
    general: list[str] = []
    try:
        validate_light(values, source="webui")
    except UserError as exc:
        message = str(exc).removeprefix("webui: ")
        named = _LEADING.findall(message) + _QUOTED.findall(message)  # "key: ..." or "... 'key' ..."
        key = next((k for k in named if k in values), None)
        if key is None:
            key = next((k for k in named if k in known_keys()), None)
        if key is not None:
            errors[key] = message
        else:
            general.append(message)
    return {"ok": not errors and not general, "errors": errors, "general": general, "yaml": to_yaml(values)}
