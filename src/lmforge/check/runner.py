"""`lmforge check CONFIG [key=value ...]`: run the configured probes on a model (plus adapter) and give a verdict.

    lmforge check check.yaml                                   # model_name_or_path, adapter_name_or_path, check:
    lmforge check check.yaml adapter_name_or_path=saves/sft    # a finished run: template and data from its run info
    lmforge check check.yaml check.samples=8 check.termination.fail_below=0.5

Prints probe | value | threshold | verdict and the worst examples, writes check_report.json and check_report.html
into `check.output_dir` (default <run dir>/check), and exits 0 only when no probe FAILs, so it can gate a pipeline.
A probe that crashes is reported as FAIL with its error; the others still run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from pathlib import Path

from lmforge.check.probe import FAIL, PROBES, ProbeResult
from lmforge.errors import ConfigError

CHECK_GROUPS = ("model", "data", "finetuning", "lora", "freeze", "quantization", "generation", "check")
"""The config groups `lmforge check` reads; the keys of other groups (a training YAML reused) are ignored."""


def probe_catalog() -> tuple[dict[str, dict], list[str]]:
    """Every registered probe's defaults, and the names of those on by default (registration order)."""
    import lmforge.check.probes  # noqa: F401 - registers every probe module

    catalog = {name: dict(PROBES.get(name).defaults) for name in PROBES}
    return catalog, [name for name in PROBES if PROBES.get(name).default_on]


def load_check_config(path: str | None, overrides: list[str] | None = None):
    """The check's groups from a YAML/JSON file plus key=value overrides, checked before torch loads."""
    from lmforge.check.context import CheckConfig
    from lmforge.config.check_args import parse_check
    from lmforge.config.loader import (_light_groups, parse_overrides, read_config_file, refuse_eval_keys,
                                       route_and_coerce, validate_keys_only)
    from lmforge.config.validate import check_model_path
    from lmforge.run_info import trained_setting

    raw = read_config_file(path) if path else {}
    for key, value in parse_overrides(overrides or []).items():
        if key.startswith("check."):  # check.samples=4, check.termination.fail_below=0.5: into the mapping
            *parents, leaf = key.split(".")[1:]
            section = raw["check"] = dict(raw.get("check") or {})
            for name in parents:
                section = section.setdefault(name, {}) if isinstance(section.get(name, {}), dict) else {}
            section[leaf] = value
        else:
            raw[key] = value
    source = str(path or "command line")
    validate_keys_only(raw, source)
    refuse_eval_keys(raw, source, "lmforge check")
    groups = _light_groups(route_and_coerce(raw, source, groups=CHECK_GROUPS), source)
    catalog, default_on = probe_catalog()
    check = parse_check(groups.pop("check").check, catalog, default_on)
    model = groups["model"]
    if not model.model_name_or_path and model.adapter_name_or_path:  # a finished run names its base
        from dataclasses import replace

        base = trained_setting("base_model", model.adapter_name_or_path, None)
        if base:
            groups["model"] = model = replace(model, model_name_or_path=base)
    if not model.model_name_or_path:
        raise ConfigError(f"{source}: set 'model_name_or_path' to a local model directory (or "
                          "'adapter_name_or_path' to a finished run)")
    check_model_path(model.model_name_or_path)
    return CheckConfig(**groups, check=check, source=source)


def default_output_dir(cfg) -> Path:
    """<run dir>/check: the last adapter's directory, else the model's when it is a run; else ./check_report."""
    from lmforge.run_info import read_run_info

    adapters = [p.strip() for p in (cfg.model.adapter_name_or_path or "").split(",") if p.strip()]
    if adapters:
        return Path(adapters[-1]) / "check"
    if read_run_info(cfg.model.model_name_or_path) is not None:
        return Path(cfg.model.model_name_or_path) / "check"
    return Path("check_report")


def run_probe(ctx, name: str) -> ProbeResult:
    """One probe's result; a crash is its FAIL, with the error, so the other probes still run."""
    started = time.perf_counter()
    try:
        result = PROBES.get(name).run(ctx, ctx.settings(name))
    except Exception as exc:  # noqa: BLE001 - any error of a probe is its verdict, not the check's end
        result = ProbeResult(name, FAIL, None, "the probe crashed", "runs without error", [],
                             {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    result.details.setdefault("seconds", round(time.perf_counter() - started, 2))
    return result


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for package in ("lmforge", "torch", "transformers", "peft"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            found[package] = "not installed"
    return found


def check_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge check", description="Run the configured probes (check: section) on a model and its adapter; "
        "print a verdict table, write check_report.json / .html; exit 1 when a probe FAILs.",
        epilog="probes: " + ", ".join(f"{n} ({PROBES.get(n).summary})" for n in probe_catalog()[0]))
    parser.add_argument("config", help="YAML/JSON with model_name_or_path (and adapter_name_or_path, check: ...)")
    # default=[]: without one, argparse calls a missing '*' positional required ('config, overrides')
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs that override the file")
    if argv and "=" in argv[0] and not argv[0].startswith("-"):  # no file: keys on the command line only
        argv = ["", *argv]
    args = parser.parse_args(argv)
    cfg = load_check_config(args.config or None, args.overrides)  # every config error before torch loads

    from lmforge.check.context import CheckContext
    from lmforge.check.report import verdict_table, write_reports

    output_dir = Path(cfg.check.output_dir) if cfg.check.output_dir else default_output_dir(cfg)
    ctx = CheckContext(cfg, output_dir)
    try:
        results = [run_probe(ctx, name) for name in cfg.check.probes]
    finally:
        ctx.close()
    print(verdict_table(results))
    meta = {"config": cfg.source, "model": cfg.model.model_name_or_path, "adapter": cfg.model.adapter_name_or_path,
            "template": ctx.template_name, "seed": cfg.check.seed, "probes": list(cfg.check.probes),
            "settings": {name: ctx.settings(name) for name in cfg.check.probes}, "versions": versions(),
            "notes": list(dict.fromkeys(ctx.notes)), "samples": {str(n): s for n, s in sorted(ctx.drawn.items())}}
    json_path, html_path = write_reports(output_dir, results, meta)
    failed = [r.name for r in results if r.verdict == FAIL]
    print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'PASS'}; reports: {json_path}, {html_path}")
    sys.stdout.flush()
    return 1 if failed else 0
