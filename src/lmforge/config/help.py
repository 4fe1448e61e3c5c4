"""`lmforge train --help [GROUP]` / `--help-all`: every config key by group, with type, default and help text.

    lmforge train --help            # every group; the training group shows lmforge's and the common keys
    lmforge train --help lora       # one group, every key
    lmforge train --help-all        # every key, all of transformers' training arguments included

Read from the field declarations (their `help` metadata and type annotations) and, for transformers' training
arguments, from the snapshot in training_fields.json, so no help needs torch or transformers.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
import types
import typing
from typing import Any

from lmforge.config.loader import LIGHT_GROUPS
from lmforge.config.training_fields import training_fields
from lmforge.errors import ConfigError, did_you_mean
from lmforge.stages import STAGES

GROUP_TITLES = {
    "model": "model: which model, how it loads",
    "data": "data: datasets, template, tokenization, packing",
    "finetuning": "finetuning: the stage and which parameters train",
    "lora": "lora: finetuning_type lora",
    "freeze": "freeze: finetuning_type freeze",
    "quantization": "quantization: QLoRA, the base loaded in 4 or 8 bits (bitsandbytes)",
    "preference": "preference: rm, dpo, kto",
    "rl": "rl: online reinforcement learning, grpo and ppo",
    "loss": "loss: how the training loss is computed",
    "optimizers": "optimizers: GaLore, APOLLO, BAdam, Adam-mini, Muon in place of AdamW (optim names the base)",
    "generation": "generation: decoding for chat, api and predict",
    "export": "export: lmforge export",
    "eval": "eval: lmforge eval (lm-evaluation-harness task YAMLs)",
    "evaluators": "evaluators: tasks scored while training runs (eval/<label>/<metric>)",
    "check": "check: lmforge check (probes, thresholds, held-out samples)",
    "training": "training: transformers' TrainingArguments (Seq2Seq) with lmforge's additions",
}
COMMON_TRAINING_KEYS = (
    "output_dir", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "predict_with_generate",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
    "weight_decay", "max_grad_norm", "optim", "bf16", "fp16", "gradient_checkpointing", "logging_steps",
    "save_strategy", "save_steps", "save_total_limit", "eval_strategy", "eval_steps", "resume_from_checkpoint",
    "seed", "report_to", "deepspeed", "fsdp", "fsdp_config", "dataloader_num_workers", "disable_tqdm",
    "ddp_timeout",
)
"""What `--help` shows of the 130 training keys besides lmforge's own; `--help training` shows them all."""


@dataclasses.dataclass(frozen=True)
class KeyHelp:
    name: str
    type: str
    default: str
    help: str


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "|".join(str(v) for v in typing.get_args(hint))
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        names = [_type_name(h) for h in typing.get_args(hint) if h is not type(None)]
        return " or ".join(names)
    origin = typing.get_origin(hint) or hint
    if origin is dict:
        return "mapping"
    if origin in (list, tuple):
        return "list"
    return getattr(origin, "__name__", str(origin))


def group_keys(group: str) -> list[KeyHelp]:
    """Every key of `group` with its type, default and help, in declaration order."""
    if group == "training":
        return [KeyHelp(name, " or ".join(spec["choices"] and ["|".join(spec["choices"])] or
                                          [k for k in spec["kinds"] if k != "none"] or ["any"]),
                        repr(spec["default"]) if isinstance(spec["default"], str) else str(spec["default"]),
                        spec["help"])
                for name, spec in training_fields()["fields"].items()]
    cls = LIGHT_GROUPS[group]
    hints = typing.get_type_hints(cls, include_extras=False)
    keys = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = repr(default) if isinstance(default, str) else str(default)
        kind, text = _type_name(hints[f.name]), " ".join(str(f.metadata.get("help", "")).split())
        if f.name == "stage":  # a registry, not a Literal: list what is registered, with each stage's summary
            specs = [STAGES.get(name) for name in STAGES]
            kind = "|".join(spec.name for spec in specs)
            text += " " + "; ".join(f"{spec.name}: {spec.summary}" for spec in specs if spec.summary)
        keys.append(KeyHelp(f.name, kind, shown, text))
    return keys


def group_names() -> list[str]:
    return [*LIGHT_GROUPS, "training"]


def _render_group(group: str, keys: list[KeyHelp], width: int, note: str = "") -> list[str]:
    lines = ["", GROUP_TITLES.get(group, group) + note]
    name_width = min(34, max(len(k.name) for k in keys) + 2)
    for key in keys:
        head = f"  {key.name:<{name_width - 1}} {key.type} = {key.default}"
        lines.append(head)
        if key.help:
            lines.extend(textwrap.wrap(key.help, width=max(40, width - 6), initial_indent="      ",
                                       subsequent_indent="      "))
    return lines


def render_help(topic: str | None = None, show_all: bool = False, width: int | None = None) -> str:
    """The text of `lmforge train --help [topic]` (`show_all`: --help-all)."""
    width = width or min(120, shutil.get_terminal_size((100, 24)).columns)
    groups = group_names()
    if topic is not None and topic not in groups:
        raise ConfigError(f"--help: no config group '{topic}'{did_you_mean(topic, groups)}; groups: {', '.join(groups)}")
    lines = [
        "usage: lmforge train CONFIG [key=value ...]",
        "       lmforge train --help [GROUP]   (groups: " + ", ".join(groups) + ")",
        "       lmforge train --help-all       (every key, all of transformers' training arguments included)",
        "",
        "CONFIG is a YAML or JSON file of LLaMA-Factory's flat keys; key=value pairs override it. Each key belongs",
        "to one group below. Keys are checked before anything loads: unknown names, types, ranges and choices.",
    ]
    for group in ([topic] if topic else groups):
        keys = group_keys(group)
        note = ""
        if group == "training" and not (show_all or topic):
            fields = training_fields()["fields"]
            shown = [k for k in keys if fields[k.name]["lmforge"] or k.name in COMMON_TRAINING_KEYS]
            note = f" ({len(shown)} of {len(keys)}; `--help training` lists all)"
            keys = shown
        lines.extend(_render_group(group, keys, width, note))
    return "\n".join(lines) + "\n"


def help_request(argv: list[str]) -> tuple[bool, str | None, bool]:
    """(asked for help?, the group named after --help, --help-all?) from a command's arguments."""
    for i, arg in enumerate(argv):
        if arg == "--help-all":
            return True, None, True
        if arg in ("-h", "--help"):
            nxt = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
            return True, nxt, False
    return False, None, False
