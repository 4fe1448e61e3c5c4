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
    parser.set_defaults(command=command)
    parser.add_argument("config", help="the training YAML/JSON")
    # default=[]: without one, argparse calls a missing '*' positional required ('config, overrides')
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs that override the file")
    return parser


def _validate(argv: list[str]) -> int:
    from lmforge.config import load_config
    from lmforge.tools.data_validate import validate_datasets

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
    import os

    parser = _parser("stats", "Counts, drops, token lengths, truncation, padding and steps per epoch.")
    parser.add_argument("--plot", metavar="FILE.png", help="write a histogram of sample lengths with the cutoff")
    args = parser.parse_args(argv)
    cfg, tokenizer, template = _tokenizer_and_template(args)
    from lmforge.tools.data_stats import data_statistics, format_report, plot_lengths

    stats = data_statistics(cfg, tokenizer, template)
    print(format_report(cfg, template.name, stats, world_size=int(os.environ.get("WORLD_SIZE", "1"))))
    if args.plot:
        plot_lengths(stats, cfg.data.cutoff_len, args.plot)
        print(f"\nlength histogram written to {args.plot}")
    return 0


def _tokenizer_and_template(args, kinds=("conversation",)):
    """The config, its tokenizer (no model) and template, as `lmforge train` resolves them; the config's
    stage must read one of the data `kinds` (`Stage.data_kind`) the command renders."""
    from lmforge.config import load_config
    from lmforge.errors import ConfigError
    from lmforge.stages import STAGES

    cfg = load_config(args.config, args.overrides)
    if STAGES.get(cfg.finetuning.stage).data_kind not in kinds:
        covered = [name for name in STAGES if STAGES.get(name).data_kind in kinds]
        raise ConfigError(f"lmforge data {args.command}: stage '{cfg.finetuning.stage}' is not covered; it reads "
                          f"the data of stage {' or '.join(covered)}")
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.data.templates import resolve_template

    tokenizer = load_tokenizer(cfg.model)
    return cfg, tokenizer, resolve_template(cfg.data.template, tokenizer, cfg.data.enable_thinking)


def _preview(argv: list[str]) -> int:
    from pathlib import Path

    parser = _parser("preview", "Processed samples with trained tokens marked, as the trainer sees them.")
    parser.add_argument("-n", type=int, default=3, help="how many samples (default 3)")
    parser.add_argument("--tokens", action="store_true", help="show token boundaries")
    parser.add_argument("--eval", action="store_true", help="preview eval_dataset instead of dataset")
    parser.add_argument("--html", metavar="FILE.html", help="also write the preview as a web page")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="ANSI colours (auto: when printing to a terminal; never: trained text in [[ ]])")
    args = parser.parse_args(argv)
    cfg, tokenizer, template = _tokenizer_and_template(args, kinds=("conversation", "pairwise"))
    from lmforge.tools.data_preview import preview_samples, render_html, render_terminal

    samples = preview_samples(cfg, tokenizer, template, args.n, per_token=args.tokens,
                              split="eval" if args.eval else "train")
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(f"stage {cfg.finetuning.stage}, template {template.name}, cutoff_len {cfg.data.cutoff_len}")
    print(render_terminal(samples, cfg.data.cutoff_len, color=color, per_token=args.tokens))
    if args.html:
        Path(args.html).write_text(render_html(samples, cfg.data.cutoff_len, per_token=args.tokens), encoding="utf-8")
        print(f"\npreview written to {args.html}")
    return 0
