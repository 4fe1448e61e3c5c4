"""The training keys, their types, choices and defaults, known without importing torch or transformers.

`TrainingArguments` subclasses transformers' `Seq2SeqTrainingArguments`: defining it imports torch and
transformers (6-9 s on a small machine). A config with a misspelt key or a negative learning rate should fail
at once, so the keys are read from `training_fields.json`, a snapshot that `describe_training_fields` writes
from the real class; `tests/test_config_preflight.py` fails when the snapshot no longer matches the installed
transformers (regenerate: `python -m lmforge.config.training_fields`).

Each field: `kinds` (bool, int, float, str, list, dict, none, any: what a YAML value may be), `choices` (the
values of an enum in its type, else null), `default` (JSON, or null when it is not plain data), `lmforge`
(declared or re-defaulted by lmforge) and `help` (the field's help text, for `lmforge train --help`).
"""

from __future__ import annotations

import enum
import functools
import json
import operator
import types
import typing
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("training_fields.json")
_KIND_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


def _kinds_of(hint: Any) -> tuple[list[str], list[str] | None]:
    options = typing.get_args(hint) if (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union) \
        else (hint,)
    kinds, choices = [], None
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None):
            kinds.append("none")
        elif origin is typing.Literal:
            kinds.extend(type(v).__name__ for v in typing.get_args(option))
        elif isinstance(origin, type) and issubclass(origin, enum.Enum):
            kinds.append("str")
            choices = [str(member.value) for member in origin]
        elif origin in (list, tuple):
            kinds.append("list")
        elif origin is dict:
            kinds.append("dict")
        elif origin in _KIND_TYPES.values():
            kinds.append(origin.__name__)
        elif origin is Path:
            kinds.append("str")
        else:
            kinds.append("any")
    return sorted(set(kinds)), choices


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return None


def describe_training_fields() -> dict:
    """The snapshot, from the real TrainingArguments (imports torch and transformers)."""
    import dataclasses

    from transformers.integrations import INTEGRATION_TO_CALLBACK

    from lmforge.config.training_args import TrainingArguments

    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    inherited = {f.name: f for f in dataclasses.fields(Seq2SeqTrainingArguments)}
    fields = {}
    for f in dataclasses.fields(TrainingArguments):
        if not f.init:
            continue
        kinds, choices = _kinds_of(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        # lmforge's own fields, and transformers' fields whose default lmforge changes
        own = f.name not in inherited or inherited[f.name].default != f.default
        fields[f.name] = {"kinds": kinds, "choices": choices, "default": _plain(default), "lmforge": own,
                          "help": " ".join(str(f.metadata.get("help", "")).split())}
    return {"fields": fields, "report_to": sorted({"all", "none", *INTEGRATION_TO_CALLBACK})}


@functools.cache
def training_fields() -> dict:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def resolve_do_train(do_train: bool | None, do_predict: bool) -> bool:
    """lmforge trains by default (a config without do_train is a training run), except where LLaMA-Factory and
    transformers would not: a config that asks for predictions and never mentions training."""
    return (not do_predict) if do_train is None else bool(do_train)


def annotation_of(kinds: list[str]) -> Any:
    """A type annotation equivalent to `kinds`, for the loader's coercion (any -> typing.Any)."""
    if "any" in kinds:
        return Any
    parts = [_KIND_TYPES[k] for k in kinds if k in _KIND_TYPES] + ([type(None)] if "none" in kinds else [])
    return functools.reduce(operator.or_, parts) if parts else Any


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(describe_training_fields(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
