"""Evaluators that run while a model trains (OLMo style): `eval_tasks` in a training YAML.

    eval_tasks:
      - {label: mc, type: downstream, task: mc_next, include_path: tasks/, limit: 200, num_fewshot: 0}
      - {label: heldout, type: lm, dataset: data/heldout.jsonl, seq_len: 512}   # loss, perplexity, bits per byte
      - {label: chat_mc, task: mc_next, include_path: tasks/, apply_chat_template: true, batch_size: auto}

Each entry is scored with `lmforge eval`'s scorer on the model being trained, at `eval_steps` (with
`eval_strategy: steps`) and at the end of training; its metrics are logged as `eval/<label>/<metric>`.
With `apply_chat_template: true` a downstream entry's prompts are chat turns rendered with the run's `template`
(lm-eval's layout; `fewshot_as_multiturn`, `system_instruction` as in `lmforge eval`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lmforge.config.eval_args import check_batch_size
from lmforge.errors import ConfigError, did_you_mean

EVALUATOR_KEYS = ("label", "type", "task", "include_path", "limit", "num_fewshot", "apply_chat_template",
                  "fewshot_as_multiturn", "system_instruction", "dataset", "seq_len", "batch_size", "eval_interval")
ONLY_FOR = {"task": "downstream", "include_path": "downstream", "limit": "downstream", "num_fewshot": "downstream",
            "apply_chat_template": "downstream", "fewshot_as_multiturn": "downstream",
            "system_instruction": "downstream", "dataset": "lm", "seq_len": "lm"}
EVALUATOR_TYPES = ("downstream", "lm")


@dataclass(frozen=True)
class EvaluatorSpec:
    """One checked `eval_tasks` entry."""

    label: str
    task: str = ""
    type: str = "downstream"
    dataset: str | None = None  # type lm: a data file, a dataset_info entry or a `lmforge tokenize` directory
    seq_len: int | None = None  # type lm: tokens per window (unset: the model's context length)
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    apply_chat_template: bool = False  # downstream: prompts as chat turns in the training run's `template`
    fewshot_as_multiturn: bool | None = None  # downstream: unset = apply_chat_template (lm-eval 0.4.13)
    system_instruction: str | None = None  # downstream: the system turn (or text before the prompt)
    eval_interval: int | None = None  # steps between this entry's evaluations (OLMo's eval_interval); unset: eval_steps
    batch_size: int | str = 8  # or "auto" (the Scorer's detection; a type lm evaluator then scores 8 at a time)

    @property
    def multiturn(self) -> bool:
        return self.apply_chat_template if self.fewshot_as_multiturn is None else self.fewshot_as_multiturn


@dataclass(frozen=True)
class EvaluatorArguments:
    eval_tasks: list[dict] | None = field(
        default=None,
        metadata={"help": "Evaluators run during training at eval_steps (eval_strategy: steps) and at the end, "
                  "logged as eval/<label>/<metric>: a list of {label, type: downstream, task: <lm-eval task name or "
                  "task YAML path>, include_path, limit, num_fewshot, apply_chat_template (true: prompts as chat turns in "
                  "the run's template), fewshot_as_multiturn, system_instruction, batch_size (an integer or auto)} or "
                  "{label, type: lm, dataset: <data file, dataset_info entry or lmforge tokenize directory>, seq_len, "
                  "batch_size (auto: 8)} (loss, perplexity, bits_per_byte). Every entry also takes eval_interval: steps between "
                  "its evaluations (unset: eval_steps with eval_strategy steps); eval_on_start: true scores them all "
                  "before the first step."},
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
        for key in entry:
            if key in ONLY_FOR and ONLY_FOR[key] != kind:
                raise ConfigError(f"{where}.{key}: is for type {ONLY_FOR[key]} entries; this one is type {kind}")
        label = entry.get("label")
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", label):
            raise ConfigError(f"{where}.label: give a name of letters, digits, '_', '-' or '.' "
                              f"(it names the logged eval/<label>/<metric>), got {label!r}")
        if label in labels:
            raise ConfigError(f"{where}.label: {label!r} is used by an earlier entry; labels must differ")
        labels.add(label)
        task = entry.get("task", "")
        if kind == "downstream" and (not isinstance(task, str) or not task.strip()):
            raise ConfigError(f"{where}.task: give a task name (found in include_path) or a task YAML path, "
                              f"got {task!r}")
        dataset = entry.get("dataset")
        if kind == "lm" and (not isinstance(dataset, str) or not dataset.strip()):
            raise ConfigError(f"{where}.dataset: give the held-out text of a type lm evaluator (a data file, a "
                              f"dataset_info entry or a `lmforge tokenize` directory), got {dataset!r}")
        include_path = entry.get("include_path")
        if include_path is not None and not isinstance(include_path, str):
            raise ConfigError(f"{where}.include_path: expects a directory path, got {include_path!r}")
        flags = {}
        for key in ("apply_chat_template", "fewshot_as_multiturn"):
            if key in entry:
                if not isinstance(entry[key], bool):
                    raise ConfigError(f"{where}.{key}: expects true or false, got {entry[key]!r}")
                flags[key] = entry[key]
        if flags.get("fewshot_as_multiturn") and not flags.get("apply_chat_template"):
            raise ConfigError(f"{where}.fewshot_as_multiturn: true needs {where}.apply_chat_template: true "
                              "(lm-eval's rule)")
        system_instruction = entry.get("system_instruction")
        if system_instruction is not None and not isinstance(system_instruction, str):
            raise ConfigError(f"{where}.system_instruction: expects text, got {system_instruction!r}")
        numbers = {}
        if "batch_size" in entry:
            numbers["batch_size"] = check_batch_size(entry["batch_size"], f"{where}.batch_size")
        for key, low in (("limit", 1), ("num_fewshot", 0), ("seq_len", 2), ("eval_interval", 1)):
            value = entry.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{where}.{key}: expects an integer >= {low}, got {value!r}")
            numbers[key] = value
        specs.append(EvaluatorSpec(label=label, task=task.strip(), type=kind, dataset=dataset,
                                   include_path=include_path, system_instruction=system_instruction, **flags,
                                   **numbers))
    return tuple(specs)
