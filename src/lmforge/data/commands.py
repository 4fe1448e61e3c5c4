"""`lmforge data preview|stats|validate CONFIG [key=value ...]`: look at the data a training config will use.

All three read the same config as `lmforge train` and go through the training data code (dataset_info,
readers, formats, templates, processors, packing); none loads a model.
"""

from __future__ import annotations

import argparse
import sys

USAGE = """usage: lmforge data COMMAND CONFIG [key=value ...] [options]

commands:
  preview CONFIG [-n N] [--tokens] [--html FILE]   processed samples as the trainer sees them, trained tokens marked
  stats CONFIG [--plot FILE]                       counts, drops, token lengths, truncation, padding, steps per epoch
  validate CONFIG                                  every record checked against its format; bad ones as file:line
"""


def data_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handlers = {"preview": _preview, "stats": _stats, "validate": _validate}
    if command not in handlers:
        from lmforge.errors import did_you_mean

        print(f"lmforge data: unknown command '{command}'{did_you_mean(command, handlers)}\n\n{USAGE}", file=sys.stderr)
        return 2
    return handlers[command](rest)


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"lmforge data {command}", description=description)
    parser.add_argument("config", help="the training YAML/JSON")
    parser.add_argument("overrides", nargs="*", help="key=value pairs that override the file")
    return parser


def _validate(argv: list[str]) -> int:
    from lmforge.config import load_config
    from lmforge.data.validation import validate_datasets

    args = _parser("validate", "Check every record of the config's datasets.").parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    report = validate_datasets(cfg.data, cfg.finetuning.stage)
    for problem in report.problems:
        print(problem)
    total = sum(d.records for d in report.datasets)
    bad = sum(sum(d.bad.values()) for d in report.datasets)
    for d in report.datasets:
        reasons = ", ".join(f"{n} {reason}" for reason, n in d.bad.most_common())
        print(f"  {d.name}: {d.records:,} records, {d.good:,} good" + (f", {d.records - d.good:,} bad ({reasons})"
                                                                     if reasons else ""))
    verdict = "all good" if report.ok else f"{bad:,} bad" if bad else "problems found"
    print(f"lmforge data validate: {len(report.datasets)} dataset(s), {total:,} records: {verdict} "
          f"(stage {cfg.finetuning.stage})")
    return 0 if report.ok else 1


def _stats(argv: list[str]) -> int:
    raise NotImplementedError


def _preview(argv: list[str]) -> int:
    raise NotImplementedError
