"""`lmforge sweep CONFIG --grid key=v1,v2 ...`: every combination of the grid trained, then compared.

    lmforge sweep examples/sft_lora.yaml --grid learning_rate=1e-4,3e-4 --grid lora_rank=8,16
    # -> <output_dir>/learning_rate-0.0001_lora_rank-8, ... then <output_dir>/compare.png and compare.html

Each variant is the config with its grid values as overrides, written to `<output_dir>/<name>`, where the name
joins the variant's keys and values. Every variant's config is checked before the first one starts, so a typo
fails in a second, not after an hour. Variants run one after another as `lmforge train` subprocesses (a crash
ends that variant only); `--parallel` runs one per GPU at a time (CUDA_VISIBLE_DEVICES), and on a machine without
GPUs says so and runs them in turn. A variant whose directory already holds a finished run (`all_results.json`) is
skipped, so a rerun after an interruption trains only what is missing. The sweep ends with `lmforge compare` over
every finished variant.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

from lmforge.errors import ConfigError


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise ConfigError(f"--grid {item!r}: write key=value1,value2")
        if key.strip() in grid:
            raise ConfigError(f"--grid: '{key.strip()}' is given twice; put all its values in one --grid")
        grid[key.strip()] = choices
    return grid


def variants(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(grid[k] for k in keys))]


def variant_name(variant: dict[str, str]) -> str:
    return "_".join(f"{key}-{value}".replace("/", "-") for key, value in variant.items())


def finished(path: Path) -> bool:
    return (path / "all_results.json").exists()


def sweep_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge sweep", description="Train every combination of a grid of "
                                     "config values, then compare the runs.")
    parser.add_argument("config", help="the base YAML/JSON config")
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs for every variant")
    parser.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                        help="a key and its values (repeatable: the variants are every combination)")
    parser.add_argument("--parallel", action="store_true", help="one variant per GPU at a time")
    args = parser.parse_args(argv)
    from lmforge.config.loader import load_config

    grid = parse_grid(args.grid)
    base = load_config(args.config, args.overrides)  # the base config's own errors first
    root = Path(base.training.output_dir)
    plan = []
    for variant in variants(grid):
        out = root / variant_name(variant)
        overrides = [*args.overrides, *(f"{k}={v}" for k, v in variant.items()), f"output_dir={out}"]
        try:
            load_config(args.config, overrides)
        except ConfigError as exc:
            raise ConfigError(f"variant {variant_name(variant)}: {exc}") from None
        plan.append((variant_name(variant), out, overrides))
    devices = _gpu_count() if args.parallel else 1
    if args.parallel and devices < 1:
        print("lmforge sweep: --parallel: no GPU here, the variants run one after another", flush=True)
    todo = [(name, out, overrides) for name, out, overrides in plan if not finished(out)]
    for name, out, _ in plan:
        if finished(out):
            print(f"lmforge sweep: {name}: finished before, skipped", flush=True)
    failures = _run_all(args.config, todo, max(1, devices))
    done = [out for _, out, _ in plan if finished(out)]
    if failures:
        print("lmforge sweep: failed: " + ", ".join(failures) + " (their consoles: <run>/sweep_train.log)",
              file=sys.stderr)
    if len(done) >= 1:
        from lmforge.tools.compare import compare_main

        compare_main([*map(str, done), "--plot", str(root / "compare.png"), "--html", str(root / "compare.html")])
    return 1 if failures else 0


def _run_all(config: str, todo: list[tuple[str, Path, list[str]]], slots: int) -> list[str]:
    """Run the variants, `slots` at a time (one per GPU); the names of those that failed."""
    failures, running = [], []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < slots:
            name, out, overrides = queue.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            if slots > 1:
                env["CUDA_VISIBLE_DEVICES"] = str(_free_slot(running, slots))
            print(f"lmforge sweep: {name}: training in {out}", flush=True)
            log = open(out / "sweep_train.log", "w", encoding="utf-8")
            process = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "train", config, *overrides],
                                       stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, process, log, env.get("CUDA_VISIBLE_DEVICES")))
        name, process, log, _ = _first_done(running)
        code = process.wait()
        log.close()
        running = [r for r in running if r[1] is not process]
        print(f"lmforge sweep: {name}: {'done' if code == 0 else f'failed (exit {code})'}", flush=True)
        if code != 0:
            failures.append(name)
    return failures


def _first_done(running):
    import time

    while True:
        for entry in running:
            if entry[1].poll() is not None:
                return entry
        time.sleep(0.5)


def _free_slot(running, slots: int) -> int:
    used = {int(entry[3]) for entry in running if entry[3] is not None}
    return next(i for i in range(slots) if i not in used)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
