"""What the in-loop evaluators cost at the demo's settings: the demo's SFT run with and without its `eval_tasks`.

    python benchmarks/inloop_eval_overhead.py --work /tmp/overhead --repeats 2

Builds the demo's model and data and pretrains once (`lmforge.demo`), then runs the demo's SFT config alternately
as the demo runs it (the held-out exact-match evaluator before the first step, every 150 steps and at the end:
6 scorings of 100 greedy answers) and without `eval_tasks` / `eval_on_start` (everything else equal, the eval
loss on the 200 validation samples every 50 steps included in both). Timed: the whole stage, from loading the
config to the saved model, in this process; the best of `--repeats` of each. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def run_sft(cfg: dict, path: Path) -> float:
    import yaml

    from lmforge.config import load_config
    from lmforge.train.stages import get_stage

    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    config = load_config(path)
    get_stage(config.finetuning.stage)(config)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from lmforge.demo import DEMO_MODEL_OVERRIDES, demo_configs, write_demo_data
    from lmforge.model.from_config import create_model

    root = args.work
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "base" / "config.json").is_file():
        create_model("tiny-qwen2", root / "base", seed=args.seed, overrides=DEMO_MODEL_OVERRIDES)
    write_demo_data(root / "data", args.seed)
    pt, sft = demo_configs(root, root / "base", root / "data", args.seed)
    if not (root / "pt" / "model.safetensors").is_file():
        run_sft(pt, root / "pt.yaml")
    with_evaluators = {**sft, "output_dir": str(root / "sft_with"), "plot_loss": False}
    without = {k: v for k, v in with_evaluators.items() if k not in ("eval_tasks", "eval_on_start")}
    without["output_dir"] = str(root / "sft_without")
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(args.repeats):
        times["without"].append(run_sft(without, root / "sft_without.yaml"))
        times["with"].append(run_sft(with_evaluators, root / "sft_with.yaml"))
    log = [json.loads(line) for line in (root / "sft_with" / "trainer_log.jsonl").read_text().splitlines()]
    scored = [(row.get("step"), row["eval/shift/exact_match"]) for row in log if "eval/shift/exact_match" in row]
    best_with, best_without = min(times["with"]), min(times["without"])
    print(f"SFT without evaluators: {', '.join(f'{t:.1f}' for t in times['without'])} s")
    print(f"SFT with evaluators:    {', '.join(f'{t:.1f}' for t in times['with'])} s  "
          f"(exact match by step: {scored})")
    print(f"in-loop evaluation adds {best_with - best_without:.1f} s = {100 * (best_with / best_without - 1):.1f}% "
          f"(best of {args.repeats} each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
