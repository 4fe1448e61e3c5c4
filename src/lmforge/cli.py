"""The `lmforge` command.

    lmforge create-model tiny-qwen2 models/tiny
    lmforge train examples/sft_lora.yaml learning_rate=1e-4
    lmforge train --stage sft --do_train --model_name_or_path models/tiny --lora_target all ...   (LLaMA-Factory's flags)
    lmforge demo --output-dir runs/demo

Subcommands are imported lazily so `lmforge --help` stays instant. A UserError prints one clear message
and exits non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = """usage: lmforge COMMAND [ARGS]

commands:
  train CONFIG [key=value ...]     train (stage pt, sft, rm, dpo or kto) from a YAML/JSON config
  eval CONFIG [key=value ...]      score a model on lm-evaluation-harness task YAMLs (multiple choice, generation,
                                   perplexity) from local files: results.json, a table, per-item samples
  check CONFIG [key=value ...]     probe a fine-tuned model (template round trip, serve parity, termination, ...):
                                   a verdict table, check_report.json / .html; exit 1 when a probe FAILs
  chat CONFIG [key=value ...]      talk to a model (and its adapter) in the terminal, answers streamed
  api CONFIG [key=value ...]       serve the model over an OpenAI-compatible API (127.0.0.1:8000, --host/--port)
  webui [--root DIR]               the browser UI: configure, train, watch, evaluate, chat, export (127.0.0.1:7860)
  export CONFIG [key=value ...]    merge LoRA adapters into the base, write a standalone model (export_dir)
  compare RUN_DIR... [--plot F.png]  runs side by side: curves overlaid, final / best figures, config keys that differ
  sweep CONFIG --grid key=v1,v2   train every combination of the grid, skip finished ones, then compare them
  average CKPT... --output DIR     the weight average of checkpoints or adapters (uniform, or --ema D)
  data preview|stats|validate CONFIG
                                   the config's data as the trainer sees it: samples, statistics, bad records
  estimate MODEL [options]         memory per device, largest micro-batch, training time (estimate mfu: a run's MFU)
  tokenize INPUT... --tokenizer DIR --output DIR
                                   text / jsonl / parquet -> memmap token shards for pretraining
  create-model PRESET OUTPUT_DIR   write a new random model + tokenizer (presets: tiny-qwen2, tiny-llama, small-qwen2)
  demo [--output-dir DIR]          pretrain a tiny model, fine-tune it on a task, report accuracy before/after
  env                              versions (python, torch, transformers, ...), devices, lmforge's commit: for bug reports
  version                          print the version

CONFIG [key=value ...] also reads LLaMA-Factory's flag form: --key value, --key=value, --flag (a bool key: true),
--no_flag (a bool key that defaults to true), with or without a config file first; later arguments override it.
"""


def _train(argv: list[str]) -> int:
    from lmforge.train.run import train_main

    return train_main(argv)


def _eval(argv: list[str]) -> int:
    from lmforge.eval.runner import eval_main

    return eval_main(argv)


def _check(argv: list[str]) -> int:
    from lmforge.check.runner import check_main

    return check_main(argv)


def _tokenize(argv: list[str]) -> int:
    from lmforge.data.memmap.writer import tokenize_main

    return tokenize_main(argv)


def _create_model(argv: list[str]) -> int:
    from lmforge.tools.create_model import create_model_main

    return create_model_main(argv)


def _export(argv: list[str]) -> int:
    from lmforge.export.merge import export_main

    return export_main(argv)


def _chat(argv: list[str]) -> int:
    from lmforge.inference.chat_cli import chat_main

    return chat_main(argv)


def _api(argv: list[str]) -> int:
    from lmforge.inference.api.server import api_main

    return api_main(argv)


def _webui(argv: list[str]) -> int:
    from lmforge.webui.server import webui_main

    return webui_main(argv)


def _compare(argv: list[str]) -> int:
    from lmforge.tools.compare import compare_main

    return compare_main(argv)


def _average(argv: list[str]) -> int:
    from lmforge.export.average import average_main

    return average_main(argv)


def _sweep(argv: list[str]) -> int:
    from lmforge.tools.sweep import sweep_main

    return sweep_main(argv)


def _data(argv: list[str]) -> int:
    from lmforge.tools.data_commands import data_main

    return data_main(argv)


def _estimate(argv: list[str]) -> int:
    from lmforge.tools.estimate import estimate_main

    return estimate_main(argv)


def _demo(argv: list[str]) -> int:
    from lmforge.demo import demo_main

    return demo_main(argv)


def _env(argv: list[str]) -> int:
    from lmforge.tools.env_report import env_main

    return env_main(argv)


def _version(argv: list[str]) -> int:
    from lmforge import __version__

    print(__version__)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _train,
    "eval": _eval,
    "check": _check,
    "tokenize": _tokenize,
    "create-model": _create_model,
    "export": _export,
    "chat": _chat,
    "api": _api,
    "webui": _webui,
    "compare": _compare,
    "average": _average,
    "sweep": _sweep,
    "data": _data,
    "estimate": _estimate,
    "demo": _demo,
    "env": _env,
    "version": _version,
}

CONFIG_COMMANDS: dict[str, tuple[str, ...]] = {
    "train": (), "eval": (), "check": (), "export": (), "chat": ("system",), "api": ("host", "port"),
}
"""The commands that take CONFIG [overrides], each with the options of its own (not config keys)."""


def config_arguments(command: str, argv: list[str]) -> list[str]:
    """A CONFIG-taking command's arguments with LLaMA-Factory's `--key value` flags turned into key=value."""
    if command not in CONFIG_COMMANDS or any(a in ("-h", "--help", "--help-all") for a in argv):
        return argv
    from lmforge.config.flags import flags_to_overrides

    return flags_to_overrides(argv, CONFIG_COMMANDS[command])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        from lmforge.errors import did_you_mean

        print(f"lmforge: unknown command '{command}'{did_you_mean(command, COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    from lmforge.errors import UserError

    try:
        return COMMANDS[command](config_arguments(command, rest))
    except UserError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
