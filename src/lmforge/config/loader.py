"""Read a YAML/JSON config plus `key=value` overrides into typed argument groups.

    cfg = load_config("examples/sft_lora.yaml", ["learning_rate=1e-4", "max_steps=20"])
    cfg.model.model_name_or_path, cfg.data.cutoff_len, cfg.training.learning_rate

Keys are LLaMA-Factory's flat keys; each belongs to exactly one group. Unknown keys fail with the
nearest valid key before anything heavy happens.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.config.data_args import DataArguments
from lmforge.config.export_args import ExportArguments
from lmforge.config.finetuning_args import FinetuningArguments
from lmforge.config.generation_args import GenerationArguments
from lmforge.config.model_args import ModelArguments
from lmforge.config.training_args import TrainingArguments
from lmforge.errors import ConfigError

GROUPS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "generation": GenerationArguments,
    "training": TrainingArguments,
    "export": ExportArguments,
}

IGNORED_KEYS = {
    # LLaMA-Factory keys that mean nothing to lmforge; accepted so its configs run unchanged.
    "ddp_timeout": "kept by transformers",
    "infer_backend": "lmforge serves with transformers (huggingface)",
}


@dataclass(frozen=True)
class RunConfig:
    """Every argument group of one run."""

    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    generation: GenerationArguments
    training: TrainingArguments
    export: ExportArguments = ExportArguments()
    source: str = ""  # the config file, for messages


def _group_of_key() -> dict[str, str]:
    owner: dict[str, str] = {}
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in owner and group != "training":
                raise AssertionError(f"config key '{f.name}' is in both {owner[f.name]} and {group}")
            owner.setdefault(f.name, group)
    return owner


KEY_GROUP = _group_of_key()
FIELD_TYPES = {
    name: hint
    for group in reversed(GROUPS.values())  # the smaller groups win where a name also exists in training
    for name, hint in typing.get_type_hints(group).items()
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            parsed[key.strip()] = raw
    return parsed


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Turn YAML/CLI values into the field's declared type, so `learning_rate=1e-4` (a YAML string) works."""
    if value is None or annotation is Any:
        return value
    is_union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    options = [o for o in (typing.get_args(annotation) if is_union else (annotation,)) if o is not type(None)]
    plain = [o for o in options if isinstance(o, type)]
    if any(typing.get_origin(o) in (dict, list) for o in options) and isinstance(value, (dict, list)):
        return value
    if any(isinstance(value, o) for o in plain) and not (isinstance(value, bool) and bool not in plain):
        return value
    for option in plain:
        try:
            if option is bool and isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if option in (int, float) and not isinstance(value, bool):
                number = option(value)
                if not (option is int and isinstance(value, float) and number != value):
                    return number
            if option is str and not isinstance(value, (dict, list)):
                return str(value)
        except (TypeError, ValueError):
            continue
    if not plain:
        return value
    names = " or ".join(o.__name__ for o in plain)
    raise ConfigError(f"key '{key}' expects {names}, got {value!r}")


def build_config(raw: dict[str, Any], source: str = "") -> RunConfig:
    """Route flat keys into groups, coerce types and run the cross-field checks."""
    from lmforge.config.validate import validate_config, validate_keys

    validate_keys(raw, KEY_GROUP, IGNORED_KEYS, source)
    per_group: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    for key, value in raw.items():
        if key in IGNORED_KEYS and key not in KEY_GROUP:
            continue
        group = KEY_GROUP[key]
        per_group[group][key] = _coerce(key, value, FIELD_TYPES[key])
    if "output_dir" not in per_group["training"]:
        raise ConfigError(f"{source or 'config'}: set 'output_dir' (where checkpoints and the model are saved)")
    groups: dict[str, Any] = {}
    for group, cls in GROUPS.items():
        try:
            groups[group] = cls(**per_group[group])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source or 'config'}: {exc}") from None
    cfg = RunConfig(**groups, source=source)
    validate_config(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    raw = read_config_file(path) if path else {}
    raw.update(parse_overrides(overrides or []))
    return build_config(raw, source=str(path or "command line"))


@dataclass(frozen=True)
class InferenceConfig:
    """The groups that `chat`, `api` and `export` use: no training arguments, no output_dir."""

    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    generation: GenerationArguments
    export: ExportArguments
    source: str = ""


def load_inference_config(path: str | Path | None, overrides: list[str] | None = None) -> InferenceConfig:
    """A config for using a model: training keys in the file (a training YAML reused) are read and ignored."""
    raw = read_config_file(path) if path else {}
    raw.update(parse_overrides(overrides or []))
    source = str(path or "command line")
    validate_keys_only(raw, source)
    used = ("model", "data", "finetuning", "generation", "export")
    per_group: dict[str, dict[str, Any]] = {g: {} for g in used}
    for key, value in raw.items():
        group = KEY_GROUP.get(key)
        if group in per_group:
            per_group[group][key] = _coerce(key, value, FIELD_TYPES[key])
    try:
        groups = {g: GROUPS[g](**per_group[g]) for g in used}
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    cfg = InferenceConfig(**groups, source=source)
    if not cfg.model.model_name_or_path:
        raise ConfigError(f"{source}: set 'model_name_or_path' to a local model directory")
    if cfg.export.export_legacy_format:
        raise ConfigError(f"{source}: 'export_legacy_format: true' would write pickled weights; lmforge writes safetensors only")
    return cfg


def validate_keys_only(raw: dict[str, Any], source: str) -> None:
    from lmforge.config.validate import validate_keys

    validate_keys(raw, KEY_GROUP, IGNORED_KEYS, source)
