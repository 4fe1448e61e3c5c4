"""Read a YAML/JSON config plus `key=value` (or `--key value`) overrides into typed argument groups.

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

from lmforge.config.adapter_args import HasAdapter
from lmforge.config.check_args import CheckArguments
from lmforge.config.data_args import DataArguments
from lmforge.config.eval_args import EvalArguments
from lmforge.config.evaluator_args import EvaluatorArguments
from lmforge.config.export_args import ExportArguments
from lmforge.config.finetuning_args import FinetuningArguments
from lmforge.config.freeze_args import FreezeArguments
from lmforge.config.generation_args import GenerationArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.config.loss_args import LossArguments
from lmforge.config.model_args import ModelArguments
from lmforge.config.optimizer_args import OptimizerArguments
from lmforge.config.preference_args import PreferenceArguments
from lmforge.config.quantization_args import QuantizationArguments
from lmforge.config.ranges import check_ranges
from lmforge.config.rl_args import RLArguments
from lmforge.config.training_fields import annotation_of, resolve_do_train, training_fields
from lmforge.errors import ConfigError, did_you_mean

if typing.TYPE_CHECKING:
    from lmforge.config.training_args import TrainingArguments

LIGHT_GROUPS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "lora": LoraArguments,
    "freeze": FreezeArguments,
    "quantization": QuantizationArguments,  # QLoRA: the base loaded in 4 / 8 bits
    "preference": PreferenceArguments,
    "rl": RLArguments,  # grpo / ppo: rollouts, rewards, the policy loss
    "loss": LossArguments,
    "optimizers": OptimizerArguments,  # use_galore / use_apollo / use_badam / use_adam_mini / use_muon
    "generation": GenerationArguments,
    "export": ExportArguments,
    "eval": EvalArguments,  # `lmforge eval` only; a training run reads none of these keys
    "evaluators": EvaluatorArguments,  # eval_tasks: scored during training (train/callbacks/evaluators.py)
    "check": CheckArguments,  # `lmforge check` only (check/runner.py); train, chat, api and export ignore it, so a
    # training YAML can carry the `check:` section its run is later checked with
}
"""The groups that are plain dataclasses, one concern each; `training` (transformers' arguments) is built last,
after validation. The flat keys of a YAML are routed to them by name (each key lives in exactly one group)."""
GROUP_NAMES = ("model", "data", "finetuning", "lora", "freeze", "quantization", "preference", "rl", "loss", "optimizers",
               "generation", "training", "export", "evaluators")


@dataclass(frozen=True)
class RunConfig(HasAdapter):
    """Every argument group of one run."""

    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    generation: GenerationArguments
    training: TrainingArguments
    export: ExportArguments = ExportArguments()
    lora: LoraArguments = LoraArguments()
    freeze: FreezeArguments = FreezeArguments()
    quantization: QuantizationArguments = QuantizationArguments()
    preference: PreferenceArguments = PreferenceArguments()
    rl: RLArguments = RLArguments()
    loss: LossArguments = LossArguments()
    optimizers: OptimizerArguments = OptimizerArguments()
    evaluators: EvaluatorArguments = EvaluatorArguments()
    source: str = ""  # the config file, for messages


def _group_of_key() -> dict[str, str]:
    owner: dict[str, str] = {}
    for group, cls in LIGHT_GROUPS.items():
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in owner:
                raise AssertionError(f"config key '{f.name}' is in both {owner[f.name]} and {group}")
            owner[f.name] = group
    for name in training_fields()["fields"]:
        owner.setdefault(name, "training")  # a smaller group's key of the same name wins
    return owner


KEY_GROUP = _group_of_key()
FIELD_TYPES = {
    **{name: annotation_of(spec["kinds"]) for name, spec in training_fields()["fields"].items()},
    **{name: hint for group in LIGHT_GROUPS.values() for name, hint in typing.get_type_hints(group).items()},
}


class TrainingView:
    """The training keys as given (coerced) over their defaults, for the rules checked before transformers loads."""

    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getattr__(self, name: str) -> Any:
        fields = training_fields()["fields"]
        if name in self._values:
            value = self._values[name]
        elif name in fields:
            value = fields[name]["default"]
        else:
            raise AttributeError(name)
        if name == "do_train":
            return resolve_do_train(value, self.do_predict)
        return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; a file that is missing, not text, not UTF-8 or not a mapping is a
    ConfigError naming it (UTF-16 files with a byte-order mark, as some Windows editors save them, are read)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give the YAML or JSON file inside it")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = decode_text(path.read_bytes(), str(path))
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    except (OSError, RecursionError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as {kind}: {type(exc).__name__}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value, got {type(data).__name__}")
    bad = [repr(k) for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{path}: keys must be names, got {', '.join(bad[:5])}")
    return data


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 (with or without a BOM) or BOM-marked UTF-16/32 text; binary or other encodings are a ConfigError."""
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                          (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{name}: starts with a {encoding} byte-order mark but is not {encoding} text "
                                  f"({exc.reason} at byte {exc.start})") from None
    if b"\x00" in raw[:4096]:
        raise ConfigError(f"{name}: binary data (NUL bytes), not a YAML/JSON text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the "
                          "file as UTF-8") from None


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


def split_config_argument(path: str | Path | None, overrides: list[str]) -> tuple[str | Path | None, list[str]]:
    """(file, overrides): a first argument that is a key=value (no config file given, all keys as arguments) is an
    override, as in `lmforge train stage=sft model_name_or_path=...` or the flag form without a file."""
    if path is not None and "=" in str(path) and not Path(path).is_file():
        return None, [str(path), *overrides]
    return path, overrides


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Turn YAML/CLI values into the field's declared type, so `learning_rate=1e-4` (a YAML string) works.

    A value of the wrong shape (a list or mapping where a scalar is expected, or the reverse) is a ConfigError
    naming the key, never passed on to fail later.
    """
    if value is None or annotation is Any:
        return value
    is_union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    options = [o for o in (typing.get_args(annotation) if is_union else (annotation,)) if o is not type(None)]
    choices = [v for o in options if typing.get_origin(o) is typing.Literal for v in typing.get_args(o)]
    if choices:  # a closed set of names, typed once on the field (e.g. finetuning_type: Literal[...])
        if value in choices and not isinstance(value, bool):
            return value
        names = [str(c) for c in choices]
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(names)}{did_you_mean(str(value), names)}")
    containers = {typing.get_origin(o) or o for o in options} & {dict, list, tuple}
    plain = [o for o in options if isinstance(o, type) and o not in (dict, list, tuple)]
    if isinstance(value, (dict, list)):
        if (dict if isinstance(value, dict) else list) in containers or (isinstance(value, list) and tuple in containers):
            return value
        wanted = " or ".join([o.__name__ for o in plain] + sorted(c.__name__ for c in containers))
        shape = "a mapping" if isinstance(value, dict) else "a list"
        raise ConfigError(f"key '{key}' expects {wanted or 'a value'}, got {shape}: {value!r}"
                          + (" (write several names as one comma-separated string)" if str in plain else ""))
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
            if option is str:
                return str(value)
        except (TypeError, ValueError, OverflowError):
            continue
    names = " or ".join([o.__name__ for o in plain] + sorted("mapping" if c is dict else "list" for c in containers))
    raise ConfigError(f"key '{key}' expects {names}, got {value!r}")


def _check_training_choices(values: dict[str, Any]) -> None:
    """Enum-typed training keys (eval_strategy, lr_scheduler_type, optim, ...) and report_to, by name."""
    fields = training_fields()["fields"]
    for key, value in values.items():
        choices = fields.get(key, {}).get("choices")
        if choices and isinstance(value, str) and value not in choices:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
    reporters = values.get("report_to")
    if reporters is not None:
        known = training_fields()["report_to"]
        names = [reporters] if isinstance(reporters, str) else reporters
        for name in names:
            if not isinstance(name, str) or name not in known:
                raise ConfigError(f"report_to: {name!r} is not one of {', '.join(known)}{did_you_mean(str(name), known)}")


def route_and_coerce(raw: dict[str, Any], source: str, groups: tuple[str, ...] = GROUP_NAMES) -> dict[str, dict]:
    """Flat keys -> {group: {key: typed value}} for `groups` (keys of other groups are left out), range-checked."""
    per_group: dict[str, dict[str, Any]] = {g: {} for g in groups}
    where = f"{source}: " if source else ""
    for key, value in raw.items():
        group = KEY_GROUP.get(key)
        if group not in per_group:
            continue  # another group's key, an accepted LLaMA-Factory key at its default, or one reported as unused
        try:
            per_group[group][key] = _coerce(key, value, FIELD_TYPES[key])
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
    if "training" in per_group:
        try:
            _check_training_choices(per_group["training"])
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
    check_ranges({k: v for group in per_group.values() for k, v in group.items()}, source)
    return per_group


def _light_groups(per_group: dict[str, dict], source: str) -> dict[str, Any]:
    try:
        return {g: LIGHT_GROUPS[g](**values) for g, values in per_group.items() if g in LIGHT_GROUPS}
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source or 'config'}: {exc}") from None


def build_training_arguments(values: dict[str, Any], source: str) -> TrainingArguments:
    """transformers' arguments from checked values: the first import of torch and transformers."""
    from lmforge.config.training_args import TrainingArguments

    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source or 'config'}: {exc}") from None


def validate_light(raw: dict[str, Any], source: str = "") -> None:
    """Every check `build_config` makes before torch is imported (the web UI runs it as the user types)."""
    _checked_groups(raw, source)


def _checked_groups(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, dict]]:
    from lmforge.config.validate import validate_config, validate_keys

    validate_keys(raw, KEY_GROUP, source)
    refuse_eval_keys(raw, source, "a training run")
    per_group = route_and_coerce(raw, source)
    if "output_dir" not in per_group["training"]:
        raise ConfigError(f"{source or 'config'}: set 'output_dir' (where checkpoints and the model are saved)")
    light = _light_groups(per_group, source)
    validate_config(RunConfig(**light, training=TrainingView(per_group["training"]), source=source))
    return light, per_group


def build_config(raw: dict[str, Any], source: str = "") -> RunConfig:
    """Route flat keys into groups, coerce types and run every check; only then build transformers' arguments.

    Everything a user can get wrong in the file (unknown keys, types, ranges, contradicting keys) is reported
    before torch or transformers is imported.
    """
    from lmforge.config.compat import report_unhonoured

    light, per_group = _checked_groups(raw, source)
    report_unhonoured(raw)
    return RunConfig(**light, training=build_training_arguments(per_group["training"], source), source=source)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    return load_config_and_keys(path, overrides)[0]


def load_config_and_keys(path: str | Path | None, overrides: list[str] | None = None) -> tuple[RunConfig, dict]:
    """The checked config and the flat keys it was built from (the file's, overrides applied), read once."""
    raw, source = _flat_keys(path, overrides)
    return build_config(dict(raw), source=source), raw


def _flat_keys(path: str | Path | None, overrides: list[str] | None) -> tuple[dict[str, Any], str]:
    """The file's keys with the key=value overrides applied, unchecked, and the name errors give their source."""
    path, overrides = split_config_argument(path, overrides or [])
    raw = read_config_file(path) if path else {}
    raw.update(parse_overrides(overrides))
    return raw, str(path or "command line")


@dataclass(frozen=True)
class InferenceConfig(HasAdapter):
    """The groups that `chat`, `api` and `export` use: no training arguments, no output_dir."""

    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    generation: GenerationArguments
    export: ExportArguments
    lora: LoraArguments = LoraArguments()
    freeze: FreezeArguments = FreezeArguments()
    quantization: QuantizationArguments = QuantizationArguments()  # chat / api: a 4 / 8-bit base; export: dequantized
    source: str = ""


def load_inference_config(path: str | Path | None, overrides: list[str] | None = None) -> InferenceConfig:
    """A config for using a model: training keys in the file (a training YAML reused) are read and ignored."""
    from lmforge.config.compat import report_unhonoured

    raw, source = _flat_keys(path, overrides)
    validate_keys_only(raw, source)
    refuse_eval_keys(raw, source, "chat, api and export")
    report_unhonoured(raw)
    used = ("model", "data", "finetuning", "lora", "freeze", "quantization", "generation", "export")
    per_group = route_and_coerce(raw, source, groups=used)
    cfg = InferenceConfig(**_light_groups(per_group, source), source=source)
    if not cfg.model.model_name_or_path:
        raise ConfigError(f"{source}: set 'model_name_or_path' to a local model directory (or a cached hub id)")
    from lmforge.config.validate import check_model_path

    check_model_path(cfg.model.model_name_or_path, cfg.model.model_revision)  # a missing path exits 2 here
    if cfg.export.export_legacy_format:
        raise ConfigError(f"{source}: 'export_legacy_format: true' would write pickled weights; lmforge writes safetensors only")
    return cfg


def validate_keys_only(raw: dict[str, Any], source: str) -> None:
    from lmforge.config.validate import validate_keys

    validate_keys(raw, KEY_GROUP, source)


def refuse_eval_keys(raw: dict[str, Any], source: str, reader: str) -> None:
    """`lmforge eval` keys (tasks, limit, ...) anywhere else would be accepted and never read: say so instead."""
    keys = [k for k in raw if KEY_GROUP.get(k) == "eval"]
    if keys:
        raise ConfigError(f"{source}: {', '.join(repr(k) for k in keys)} {'is an' if len(keys) == 1 else 'are'} "
                          f"`lmforge eval` key{'s' if len(keys) > 1 else ''}; {reader} does not read "
                          f"{'it' if len(keys) == 1 else 'them'} (run lmforge eval with a config of its own)")
