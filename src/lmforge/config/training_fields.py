"""The training keys, their types, choices and defaults, known without importing torch or transformers.

`TrainingArguments` subclasses transformers' `Seq2SeqTrainingArguments`: defining it imports torch and
transformers (6-9 s on a small machine). A config with a misspelt key or a negative learning rate should fail
at once, so the keys are read from `training_fields.json`, a snapshot that `describe_training_fields` writes
from the real class; `tests/test_config_preflight.py` fails when the snapshot no longer matches the installed
transformers (regenerate: `python -m lmforge.config.training_args`).

Each field: `kinds` (bool, int, float, str, list, dict, none, any: what a YAML value may be), `choices` (the
values of an enum in its type, else null), `default` (JSON, or null when it is not plain data), `lmforge`
(declared or re-defaulted by lmforge) and `help` (the field's help text, for `lmforge train --help`).
"""

from __future__ import annotations

import functools
import json
import operator
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("training_fields.json")
_KIND_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


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
