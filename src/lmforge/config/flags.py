"""LLaMA-Factory's shell form of a command line (`--key value`, `--flag`, `--no_flag`) turned into lmforge's
`[CONFIG] key=value ...`, read as transformers' HfArgumentParser reads it.

    flags_to_overrides(["--stage", "sft", "--do_train", "cfg.yaml"]) == ["cfg.yaml", "stage=sft", "do_train=true"]
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from lmforge.config.loader import FIELD_TYPES, KEY_GROUP, LIGHT_GROUPS
from lmforge.config.training_fields import training_fields
from lmforge.errors import ConfigError


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_TRUE_WORDS = ("yes", "true", "t", "y", "1")
_FALSE_WORDS = ("no", "false", "f", "n", "0")


def _key_kind(key: str) -> tuple[str, Any]:
    """('bool' | 'list' | 'value' | 'unknown', default) of a config key, for reading it as a `--flag`."""
    from lmforge.config.compat import ACCEPTED_UNUSED
    from lmforge.config.llamafactory_keys import UNSUPPORTED

    if key in FIELD_TYPES:
        hint = FIELD_TYPES[key]
        is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        options = [o for o in (typing.get_args(hint) if is_union else (hint,)) if o is not type(None)]
        default = _default_of(key)
        if options == [bool]:
            return "bool", default
        if any((typing.get_origin(o) or o) in (list, tuple) for o in options):
            return "list", default
        return "value", default
    lf_default = next((keys[key] for keys in UNSUPPORTED.values() if key in keys), None)
    if key in ACCEPTED_UNUSED:
        lf_default = ACCEPTED_UNUSED[key][0]
    return ("bool" if isinstance(lf_default, bool) else "unknown"), lf_default


def _default_of(key: str) -> Any:
    group = KEY_GROUP.get(key)
    if group in LIGHT_GROUPS:
        for f in dataclasses.fields(LIGHT_GROUPS[group]):
            if f.name == key:
                return f.default if f.default is not dataclasses.MISSING else None
    return training_fields()["fields"].get(key, {}).get("default")


def _flag_key(name: str) -> str:
    """`lora-target` -> `lora_target` when only the underscored spelling is a key (HfArgumentParser takes both)."""
    if name in FIELD_TYPES or "-" not in name:
        return name
    underscored = name.replace("-", "_")
    return underscored if underscored in FIELD_TYPES else name


def flags_to_overrides(argv: list[str], own_options: tuple[str, ...] = ()) -> list[str]:
    """A command's arguments in LLaMA-Factory's shell form, as `[CONFIG] key=value ...` plus its own options.

        flags_to_overrides(["--stage", "sft", "--do_train", "--lora_target=all", "cfg.yaml", "lr=1"])
        == ["cfg.yaml", "stage=sft", "do_train=true", "lora_target=all", "lr=1"]

    Read as `llamafactory-cli train` / HfArgumentParser read them: `--key value`, `--key=value` (also
    `--key-name`), a bool key alone (`--do_train`, true; `--do_train false` also works) and `--no_<key>` for a bool
    key whose default is true; `key=value` passes unchanged, and so does each option in `own_options` (`--port`)
    with its value. A value is kept as written, so `--learning_rate 1e-4` reads exactly like
    `learning_rate=1e-4`. The config file is the positional argument that is not key=value (the first one, or
    one ending in .yaml/.yml/.json); it is moved first, so the flags, read after the file, override its keys.
    A key lmforge does not know is passed on as key=value and fails there with the usual did-you-mean.
    """
    files: list[str] = []
    overrides: list[str] = []
    own: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--" or (arg.startswith("-") and not arg.startswith("--")):
            own.append(arg)  # argparse's own business (-h, a separator)
            continue
        if not arg.startswith("--"):
            if ("=" in arg and not Path(arg).is_file()) or (files and not arg.endswith(CONFIG_SUFFIXES)):
                overrides.append(arg)  # key=value (a stray word fails there as "not key=value")
            else:
                files.append(arg)
            continue
        name, has_value, value = arg[2:].partition("=")
        if name in own_options or arg in own_options:
            own.append(arg)
            if not has_value and i < len(argv):
                own.append(argv[i])
                i += 1
            continue
        key = _flag_key(name)
        if has_value:
            overrides.append(f"{key}={value}")
            continue
        kind, default = _key_kind(key)
        negated = _flag_key(name[3:]) if name.startswith(("no_", "no-")) else None
        if kind == "unknown" and negated and _key_kind(negated) == ("bool", True):
            overrides.append(f"{negated}=false")  # HfArgumentParser's --no_<key> for a bool key that defaults to true
            continue
        nxt = argv[i] if i < len(argv) else None
        takes_next = nxt is not None and not nxt.startswith("--")
        if kind == "bool":
            if takes_next and nxt.lower() in _TRUE_WORDS + _FALSE_WORDS:
                overrides.append(f"{key}={'true' if nxt.lower() in _TRUE_WORDS else 'false'}")
                i += 1
            else:
                overrides.append(f"{key}=true")
            continue
        if not takes_next:
            if kind == "unknown":
                overrides.append(f"{key}=true")  # unknown: reported by name (did-you-mean) when the keys are checked
                continue
            raise ConfigError(f"--{name} needs a value (--{name} VALUE or --{name}=VALUE)")
        values = [nxt]
        i += 1
        while kind == "list" and i < len(argv) and not argv[i].startswith("--") and "=" not in argv[i] \
                and not argv[i].endswith(CONFIG_SUFFIXES):
            values.append(argv[i])  # nargs="+", as HfArgumentParser reads a list key: --report_to wandb tensorboard
            i += 1
        overrides.append(f"{key}={values[0]}" if len(values) == 1 else f"{key}={json.dumps(values)}")
    if len(files) > 1:
        raise ConfigError(f"give one config file, got {len(files)}: {', '.join(files)}")
    return [*files, *overrides, *own]
