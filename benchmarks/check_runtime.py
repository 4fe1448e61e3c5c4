"""How long `lmforge check` takes with its default suite on the demo's fine-tuned model (issue 20, line 4: < 180 s
on 2 CPU cores).

    python benchmarks/check_runtime.py --work /tmp/check_bench            # builds the demo once (~75 s), then times
    python benchmarks/check_runtime.py --work /tmp/check_bench --repeats 2

Builds the demo (`lmforge.demo.run_demo`: fresh tiny-qwen2, pretrain, SFT) into `--work/demo` unless it is there,
then times `lmforge check <demo>/check.yaml` (the check config the demo writes: the fine-tuned model, every default
probe at its default sizes) end to end, each repeat a fresh `python -m lmforge.cli check` process (wall clock:
imports, model, base, export and API server loads and the written reports included; in one process a second run
is ~15x faster, torch and bitsandbytes warm, and would be no user's figure). Prints each probe's seconds (from check_report.json) and the total,
the best of `--repeats` runs. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def build_demo(root: Path) -> Path:
    from lmforge.demo import run_demo

    if not (root / "sft" / "config.json").is_file() or not (root / "check.yaml").is_file():
        run_demo(root, seed=0, say=lambda _: None)
    return root / "check.yaml"


def time_check(check_yaml: Path, output_dir: Path) -> tuple[float, int, dict]:
    """`lmforge check` in a fresh process, as a user runs it: imports (torch, bitsandbytes) included, nothing warm."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmforge.cli", "check", str(check_yaml),
                           f"check.output_dir={output_dir}"], capture_output=True, text=True)
    total = time.perf_counter() - started
    print(done.stdout[-3000:])
    return total, done.returncode, json.loads((output_dir / "check_report.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/check_bench"))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    check_yaml = build_demo(args.work / "demo")
    runs = [time_check(check_yaml, args.work / f"report{i}") for i in range(args.repeats)]
    total, code, report = min(runs, key=lambda r: r[0])
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; versions {report.get('versions')}")
    print(f"lmforge check {check_yaml}  (exit {code}; best of {args.repeats}: "
          f"{', '.join(f'{r[0]:.1f}' for r in runs)} s)")
    print(f"{'probe':<20} {'verdict':<7} {'value':>8} {'seconds':>8}")
    for r in report["results"]:
        value = "-" if r["value"] is None else f"{r['value']:.3f}"
        print(f"{r['name']:<20} {r['verdict']:<7} {value:>8} {r['details'].get('seconds', float('nan')):>8.1f}")
    probes = sum(r["details"].get("seconds", 0.0) for r in report["results"])
    print(f"{'probes':<20} {'':<7} {'':>8} {probes:>8.1f}")
    print(f"{'total (end to end)':<20} {'':<7} {'':>8} {total:>8.1f}   goal < 180 s: {'met' if total < 180 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
