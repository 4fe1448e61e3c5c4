"""The allowed range of every numeric key, checked on the raw values before anything is imported or loaded.

A rule is data: (low, low_inclusive, high, high_inclusive, what the value means). A value outside it is a
ConfigError naming the key, the value and the range, e.g.
`'gradient_accumulation_steps' must be >= 1, got 0 (micro-batches per optimizer step)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lmforge.errors import ConfigError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    meaning: str = ""
    allow: tuple = ()
    """Values accepted outside the range (e.g. max_steps -1 = no limit)."""

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'[' if self.low_inclusive else '('}{_num(self.low)}, {_num(self.high)}"
                    f"{']' if self.high_inclusive else ')'}")
        if self.low is not None:
            return f"{'>=' if self.low_inclusive else '>'} {_num(self.low)}"
        return f"{'<=' if self.high_inclusive else '<'} {_num(self.high)}"

    def holds(self, value: float) -> bool:
        if value in self.allow:
            return True
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Range(0, False)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
DROPOUT = Range(0, True, 1, False, "a dropout probability")

RANGES: dict[str, Range] = {
    # optimisation
    "learning_rate": Range(0, False, meaning="the peak learning rate"),
    "weight_decay": NON_NEGATIVE,
    "adam_beta1": Range(0, True, 1, False),
    "adam_beta2": Range(0, True, 1, False),
    "adam_epsilon": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "warmup_max_grad_norm": POSITIVE,
    "warmup_ratio": Range(0, True, 1, True, "a fraction of the training steps"),
    "warmup_steps": NON_NEGATIVE,
    "decay_ratio": Range(0, False, 1, True, "a fraction of the training steps"),
    "num_train_epochs": Range(0, False, meaning="epochs to train; 0 would train nothing"),
    "max_steps": Range(1, meaning="optimizer steps; -1 = from num_train_epochs", allow=(-1,)),
    "label_smoothing_factor": Range(0, True, 1, False),
    # batching
    "per_device_train_batch_size": Range(1, meaning="samples per device per micro-batch"),
    "per_device_eval_batch_size": Range(1, meaning="samples per device per eval batch"),
    "gradient_accumulation_steps": Range(1, meaning="micro-batches per optimizer step"),
    "eval_accumulation_steps": AT_LEAST_ONE,
    "dataloader_num_workers": NON_NEGATIVE,
    "dataloader_prefetch_factor": AT_LEAST_ONE,
    "max_tokens_per_batch": AT_LEAST_ONE,
    "loss_chunk_size": NON_NEGATIVE,
    # logging, saving, evaluating (floats < 1 are fractions of the total steps in transformers)
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_total_limit": AT_LEAST_ONE,
    "seed": NON_NEGATIVE,
    "data_seed": NON_NEGATIVE,
    "peak_tflops": POSITIVE,
    # data
    "cutoff_len": Range(2, meaning="tokens per sample"),
    "max_samples": Range(1, meaning="records kept per dataset"),
    "val_size": NON_NEGATIVE,
    "preprocessing_num_workers": AT_LEAST_ONE,
    "preprocessing_batch_size": AT_LEAST_ONE,
    # adapters
    "lora_rank": Range(1, meaning="the rank of the update matrices"),
    "lora_alpha": POSITIVE,
    "lora_dropout": DROPOUT,
    "freeze_trainable_layers": Range(meaning="layers to train (negative: the first N)"),
    # preference
    "pref_beta": POSITIVE,
    "pref_ftx": NON_NEGATIVE,
    "dpo_label_smoothing": Range(0, True, 0.5, False),
    "simpo_gamma": NON_NEGATIVE,
    "kto_chosen_weight": NON_NEGATIVE,
    "kto_rejected_weight": NON_NEGATIVE,
    # online RL
    "num_generations": Range(2, meaning="completions per prompt; a group of one has no baseline"),
    "max_completion_length": AT_LEAST_ONE,
    "epsilon": Range(0, False, 1, False),
    "epsilon_high": POSITIVE,
    "beta": NON_NEGATIVE,
    "num_iterations": AT_LEAST_ONE,
    "ppo_epochs": AT_LEAST_ONE,
    "ppo_buffer_size": AT_LEAST_ONE,
    "ppo_target": POSITIVE,
    # generation
    "max_new_tokens": AT_LEAST_ONE,
    "max_length": AT_LEAST_ONE,
    "temperature": NON_NEGATIVE,
    "top_p": Range(0, False, 1, True),
    "top_k": NON_NEGATIVE,
    "num_beams": Range(1, True, 1, True, "beam search is not supported: the generation engine decodes greedily "
                       "(do_sample: false) or samples"),
    "max_num_seqs": AT_LEAST_ONE,
    "ema_decay": Range(0, False, 1, False, "weight of the running average per step"),
    "max_batch_tokens": AT_LEAST_ONE,
    "repetition_penalty": POSITIVE,
    "length_penalty": Range(),
    # export
    "export_size": POSITIVE,
}


def check_ranges(values: dict[str, Any], source: str) -> None:
    """Raise ConfigError for the first numeric value outside its range (in the order the config gives them)."""
    where = f"{source}: " if source else ""
    problems = []
    for key, value in values.items():
        rule = RANGES.get(key)
        if rule is None or rule.low is None and rule.high is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not rule.holds(value):
            meaning = f" ({rule.meaning})" if rule.meaning else ""
            problems.append(f"'{key}' must be {rule.describe()}, got {value}{meaning}")
    if len(problems) == 1:
        raise ConfigError(where + problems[0])
    if problems:
        raise ConfigError(f"{where}{len(problems)} values are out of range:\n  " + "\n  ".join(problems))
