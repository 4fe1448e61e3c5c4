"""Did a refactor change training? lmforge's side of the SFT benchmark, run from two source trees, losses compared.

    git worktree add /tmp/before <old commit>
    .venv/bin/python benchmarks/loss_curves_unchanged.py --before /tmp/before/src --after src --samples 16

Each lmforge variant of `sft_vs_llamafactory.py` (same COMMON keys: small-qwen2, alpaca_en_demo, cutoff 1024,
batch 4, cosine, seed 42) trains at each precision once per tree, as `python -m lmforge.cli train` with
PYTHONPATH pointing at that tree; the per-step losses of the two runs must be identical (printed with the
largest difference). Speed is not compared: only what was computed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sft_vs_llamafactory import COMMON, DEFAULT_DATA, LMFORGE_VARIANTS  # noqa: E402


def train(src: Path, model: Path, data: Path, out: Path, extra: dict, samples: int) -> list[float]:
    config = {**COMMON, **extra, "model_name_or_path": str(model), "dataset_dir": str(data),
              "output_dir": str(out), "max_samples": samples, "data_cache_dir": str(out / "cache"),
              "disable_tqdm": True}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "NPROC_PER_NODE": "1"}
    done = subprocess.run([sys.executable, "-m", "lmforge.cli", "train", str(path)], env=env, cwd=out,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{src}: training failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="src/ of the old tree")
    parser.add_argument("--after", type=Path, required=True, help="src/ of the new tree")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--variants", default="lmforge_nopack,lmforge_recommended")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    from lmforge.model.from_config import create_model

    work = Path(tempfile.mkdtemp(prefix="loss_curves_"))
    model = create_model("small-qwen2", work / "model")
    same = True
    for precision in args.precisions.split(","):
        for variant in args.variants.split(","):
            extra = {**LMFORGE_VARIANTS[variant], **({"bf16": True} if precision == "bf16" else {})}
            before = train(args.before, model, args.data, work / f"{variant}_{precision}_before", extra, args.samples)
            after = train(args.after, model, args.data, work / f"{variant}_{precision}_after", extra, args.samples)
            diff = max((abs(a - b) for a, b in zip(before, after)), default=0.0)
            equal = before == after
            same &= equal
            print(f"{variant:<22} {precision:<5} {len(before)} steps  first {before[0]:.6f}  last {before[-1]:.6f}  "
                  f"max |diff| {diff:.2e}  {'identical' if equal else 'DIFFERENT'}")
            if not equal:
                print(f"  before {before}\n  after  {after}")
    print(f"work directory: {work}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
