"""Evaluators that run while a model trains (OLMo style): `eval_tasks` in a training YAML.

    eval_tasks:
      - {label: mc, type: downstream, task: mc_next, include_path: tasks/, limit: 200, num_fewshot: 0}

Each entry is scored with `lmforge eval`'s scorer on the model being trained, at `eval_steps` (with
`eval_strategy: steps`) and at the end of training; its metrics are logged as `eval/<label>/<metric>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import ConfigError, did_you_mean

EVALUATOR_KEYS = ("label", "type", "task", "include_path", "limit", "num_fewshot", "batch_size")
EVALUATOR_TYPES = ("downstream", "lm")


@dataclass(frozen=True)
class EvaluatorSpec:
    """One checked `eval_tasks` entry."""

    label: str
    task: str
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int = 8


@dataclass(frozen=True)
class EvaluatorArguments:
    eval_tasks: list[dict] | None = field(
        default=None,
        metadata={"help": "Evaluators run during training at eval_steps (eval_strategy: steps) and at the end, "
                  "logged as eval/<label>/<metric>: a list of {label, type: downstream, task: <lm-eval task name or "
                  "task YAML path>, include_path, limit, num_fewshot, batch_size}. type: lm is not supported yet."},
    )

    @property
    def evaluators(self) -> tuple[EvaluatorSpec, ...]:
        return parse_eval_tasks(self.eval_tasks)


def parse_eval_tasks(entries: Any) -> tuple[EvaluatorSpec, ...]:
    """The checked entries of `eval_tasks`; a ConfigError naming `eval_tasks[i].key` for a bad one."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"eval_tasks: expects a list of mappings, got {type(entries).__name__}")
    specs, labels = [], set()
    for i, entry in enumerate(entries):
        where = f"eval_tasks[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expects a mapping like {{label: mc, type: downstream, task: NAME}}, "
                              f"got {entry!r}")
        for key in entry:
            if key not in EVALUATOR_KEYS:
                raise ConfigError(f"{where}.{key}: unknown key{did_you_mean(str(key), EVALUATOR_KEYS)}; "
                                  f"keys: {', '.join(EVALUATOR_KEYS)}")
        kind = entry.get("type", "downstream")
        if kind not in EVALUATOR_TYPES:
            raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(EVALUATOR_TYPES)}"
                              f"{did_you_mean(str(kind), EVALUATOR_TYPES)}")
        if kind == "lm":
            raise ConfigError(f"{where}.type: 'lm' evaluators (loss and perplexity of a held-out set) are not "
                              "supported during training yet; use type: downstream with a loglikelihood_rolling "
                              "task YAML, or val_size / eval_dataset for the eval loss")
        label = entry.get("label")
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", label):
            raise ConfigError(f"{where}.label: give a name of letters, digits, '_', '-' or '.' "
                              f"(it names the logged eval/<label>/<metric>), got {label!r}")
        if label in labels:
            raise ConfigError(f"{where}.label: {label!r} is used by an earlier entry; labels must differ")
        labels.add(label)
        task = entry.get("task")
        if not isinstance(task, str) or not task.strip():
            raise ConfigError(f"{where}.task: give a task name (found in include_path) or a task YAML path, "
                              f"got {task!r}")
        include_path = entry.get("include_path")
        if include_path is not None and not isinstance(include_path, str):
            raise ConfigError(f"{where}.include_path: expects a directory path, got {include_path!r}")
        numbers = {}
        for key, low in (("limit", 1), ("num_fewshot", 0), ("batch_size", 1)):
            value = entry.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{where}.{key}: expects an integer >= {low}, got {value!r}")
            numbers[key] = value
        specs.append(EvaluatorSpec(label=label, task=task.strip(), include_path=include_path, **numbers))
    return tuple(specs)
