"""Where the time of one `lmforge train` job goes: cProfile of the whole process (Python-side stalls, syncs) and
torch.profiler's operator table (GPU or CPU time per op) over a few steps.

    PYTHONPATH=src python benchmarks/gpu_profile.py CONFIG.yaml --out DIR [--steps 8]

Writes DIR/cprofile.txt (top functions by own and cumulative time) and DIR/ops.txt (top operators).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

import torch
import yaml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(Path(args.config).read_text())
    cfg.update(max_steps=args.steps, logging_steps=1, output_dir=str(args.out / "run"))
    path = args.out / "profiled.yaml"
    path.write_text(yaml.safe_dump(cfg))

    from lmforge.cli import main as lmforge

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profile = cProfile.Profile()
    with torch.profiler.profile(activities=activities) as ops:
        profile.enable()
        code = lmforge(["train", str(path)])
        profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    (args.out / "cprofile.txt").write_text(text.getvalue())
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = ops.key_averages().table(sort_by=key, row_limit=30)
    table += "\n" + ops.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    (args.out / "ops.txt").write_text(table)
    print(table[:6000])
    return code


if __name__ == "__main__":
    sys.exit(main())
