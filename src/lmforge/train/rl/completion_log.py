"""`log_completions`: sampled prompts, completions and their rewards, appended to output_dir/completions.jsonl.

One JSON object per completion: {"step", "prompt", "completion", "answer", "reward", "advantage", "rewards": {name:
value}}. Written by the main process only, for its own micro-batches.
"""

from __future__ import annotations

import json
from pathlib import Path

COMPLETIONS_FILE = "completions.jsonl"


class CompletionLog:
    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / COMPLETIONS_FILE

    def write(self, step: int, rollouts: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            for r in rollouts:
                for i, completion in enumerate(r["completions"]):
                    record = {"step": step, "prompt": r["prompts"][i], "completion": completion,
                              "answer": r["answers"][i], "reward": float(r["rewards"][i]),
                              "advantage": float(r["advantages"][i]),
                              "rewards": {name: values[i] for name, values in r["per_func"].items()}}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
