"""`lmforge create-model PRESET OUTPUT_DIR`: a new randomly initialised model and tokenizer, no downloads.

    lmforge create-model tiny-qwen2 models/tiny --set num_hidden_layers=4
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lmforge.errors import ConfigError
from lmforge.model.presets import PRESETS


def create_model_main(argv: list[str]) -> int:
    """`lmforge create-model PRESET OUTPUT_DIR [--seed N] [--set key=value ...] [--overwrite]`."""
    presets = "\n".join(f"  {name:<12} {PRESETS.get(name).description}" for name in PRESETS.names())
    parser = argparse.ArgumentParser(
        prog="lmforge create-model",
        description="Create a new randomly initialised model and tokenizer (no downloads).",
        epilog=f"presets:\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("preset", help="preset name: " + ", ".join(PRESETS.names()))
    parser.add_argument("output_dir", help="directory to write (must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="random init seed (default 0)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config field, e.g. --set num_hidden_layers=4 (repeatable; values parse as JSON)",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    args = parser.parse_args(argv)

    overrides = dict(_parse_override(item) for item in args.overrides)
    PRESETS.get(args.preset)  # an unknown name fails here, before torch loads
    from lmforge.model.from_config import create_model

    path = create_model(
        args.preset, args.output_dir, seed=args.seed, overrides=overrides, overwrite=args.overwrite
    )
    print(path)
    return 0


def _parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, value), reading the value as JSON (4, 1e-5, true, [1, 2]) or else as text."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
