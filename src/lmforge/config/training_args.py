"""Trainer settings: transformers' Seq2SeqTrainingArguments plus the LLaMA-Factory keys it dropped."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Seq2SeqTrainingArguments

from lmforge.config.accelerate_env import check_fsdp_on_cpu, launched_fsdp_config
from lmforge.config.training_fields import _KIND_TYPES, SNAPSHOT, resolve_do_train
from lmforge.errors import ConfigError


@dataclass
class TrainingArguments(Seq2SeqTrainingArguments):
    """transformers' arguments with lmforge's defaults and compatibility keys.

    transformers 5 removed `warmup_ratio`, `overwrite_output_dir` and `group_by_length`, which every
    LLaMA-Factory YAML still uses; they are accepted here and translated once, in `__post_init__`.
    """

    do_train: bool | None = field(
        default=None,
        metadata={"help": "Run training. Unset: true, unless 'do_predict: true' is set (a predict-only config, as "
                  "LLaMA-Factory and transformers read it, whose do_train defaults to false)."},
    )
    report_to: str | list[str] | None = field(
        default="none", metadata={"help": "Experiment trackers to log to (none by default: nothing leaves the machine)."}
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Drop dataset columns the model's forward does not name. Off: lmforge's datasets hold only "
                  "what the collator needs (e.g. sequence_lengths of packed rows)."},
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Linear warm-up over this fraction of the steps (LLaMA-Factory key)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into an output_dir that already holds a finished run."}
    )
    group_by_length: bool = field(
        default=False, metadata={"help": "Batch samples of similar length together to cut padding."}
    )
    peak_tflops: float | None = field(
        default=None,
        metadata={
            "help": "Peak dense TFLOP/s of one device in the training dtype, the denominator of throughput/mfu "
            "(e.g. 989 for an H100 SXM in bf16). Unset: looked up by GPU name in lmforge.arith.peak_tflops.PEAK_TFLOPS, "
            "else measured at train start (mfu_calibration)."
        },
    )
    mfu_calibration: bool = field(
        default=True,
        metadata={
            "help": "When peak_tflops is unset and the device has no datasheet entry (CPUs, unlisted GPUs), time a "
            "~0.5 s square matmul in the training dtype at train start and use the achieved FLOP/s as the peak. "
            "false: no throughput/mfu on such devices (throughput/tflops_per_device is still logged)."
        },
    )

    selective_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "With gradient_checkpointing: keep matmul and attention outputs and recompute only the cheap "
            "ops between them (torch selective checkpointing): most of the memory saving for a fraction of the time."
        },
    )
    warmup_max_grad_norm: float | None = field(
        default=None,
        metadata={"help": "Gradient-norm clip during warm-up (e.g. 2x max_grad_norm); max_grad_norm after it."},
    )
    weight_decay_embeddings: bool = field(
        default=False,
        metadata={"help": "Also decay embedding matrices. Norm weights and biases are never decayed."},
    )
    decay_ratio: float = field(
        default=0.1,
        metadata={"help": "lr_scheduler_type warmup_stable_decay: fraction of the steps spent in the final decay."},
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={"help": "On a NaN/inf loss or gradient norm, skip that update and go on instead of stopping."},
    )

    def __post_init__(self):
        self.do_train = resolve_do_train(self.do_train, self.do_predict)
        if self.warmup_ratio and not self.warmup_steps:
            # transformers 5 reads a float warmup_steps in [0, 1) as a ratio of the total steps.
            self.warmup_steps = self.warmup_ratio
        if self.lr_scheduler_type == "constant" and (self.warmup_ratio or self.warmup_steps):
            self.lr_scheduler_type = "constant_with_warmup"  # transformers' "constant" ignores warm-up
        if self.lr_scheduler_type == "warmup_stable_decay":
            if not 0 < self.decay_ratio <= 1:
                raise ConfigError(f"'decay_ratio' must be in (0, 1], got {self.decay_ratio}")
            # the step counts are known only at train start: BaseTrainer.create_scheduler fills them in
        if self.group_by_length:
            self.train_sampling_strategy = "group_by_length"
        if self.activation_checkpointing or self.gradient_checkpointing or self.selective_checkpointing:
            # transformers 5 renamed gradient_checkpointing* to activation_checkpointing*; LLaMA-Factory configs
            # use the old names. Resolve both here so the model loader and the Trainer read one setting.
            kwargs = self.activation_checkpointing_kwargs or self.gradient_checkpointing_kwargs or {}
            if isinstance(kwargs, str):
                kwargs = json.loads(kwargs)
            # Reentrant checkpointing drops gradients of frozen-base models (LoRA, freeze) unless inputs
            # require grad; the non-reentrant variant has no such trap and is what torch recommends.
            self.activation_checkpointing_kwargs = {"use_reentrant": False, **kwargs}
            if self.selective_checkpointing:
                from lmforge.config.checkpointing_policy import selective_checkpoint_context

                # also used when the Trainer re-enables checkpointing at train start
                self.activation_checkpointing_kwargs["context_fn"] = selective_checkpoint_context
            self.activation_checkpointing = True
            self.gradient_checkpointing, self.gradient_checkpointing_kwargs = None, None
        if (self.bf16 or self.fp16) and not torch.cuda.is_available():
            # transformers refuses mixed precision without a GPU unless told it runs on CPU; bf16 autocast
            # on CPU is a real fast path (AMX / AVX512-BF16), so lmforge says so for the user.
            self.use_cpu = True
        if not torch.accelerator.is_available():
            # Without use_cpu, accelerate does not join torchrun's workers into one gloo group on a CPU machine:
            # each process silently trains alone on its own shard (world size 1).
            self.use_cpu = True
            launched = launched_fsdp_config(os.environ)
            if launched is not None and not self.fsdp:
                # use_cpu makes accelerate skip its own FSDP variables (plain DDP instead): pass them on as
                # transformers' fsdp arguments, the route that runs FSDP2 over gloo.
                self.fsdp, self.fsdp_config = True, launched
            check_fsdp_on_cpu(self.fsdp, self.fsdp_config)
        if self.deepspeed:
            check_deepspeed(self.deepspeed)
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on every loader
        super().__post_init__()

    @property
    def checkpoint_every_n_layers(self) -> int:
        """With activation checkpointing, which decoder layers recompute: every n-th (1 = all of them)."""
        return int((self.activation_checkpointing_kwargs or {}).get("every_n_layers", 1))


def check_deepspeed(value) -> None:
    """`deepspeed: path.json` (or an inline dict): the file must exist and parse, and deepspeed must be installed.

    transformers would otherwise fail inside TrainingArguments with a package-metadata traceback.
    """
    import importlib.util
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"deepspeed: '{value}' is not a file; point it at a DeepSpeed JSON config "
                              "(examples/deepspeed/ds_z2_config.json is one)")
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"deepspeed: {value}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    elif not isinstance(value, dict):
        raise ConfigError(f"deepspeed: expected a JSON file path or a mapping, got {type(value).__name__}")
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed: the deepspeed package is not installed; pip install 'lmforge[deepspeed]' "
                          "(it needs a CUDA machine), or remove the key to train with DDP")


# -- the snapshot of these keys that config checks read without importing this module ---------------------

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
    from transformers.integrations import INTEGRATION_TO_CALLBACK

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


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(describe_training_fields(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
