"""What `lmforge eval` scores and where it writes, under lm-evaluation-harness's names.

    lmforge eval eval.yaml tasks=my_mc,my_ppl include_path=tasks/ num_fewshot=5 limit=100 output_path=out/
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EvalArguments:
    tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated task names (found in include_path) or task YAML files, as lm-eval's --tasks."},
    )
    include_path: str | None = field(
        default=None, metadata={"help": "A directory of lm-evaluation-harness task YAMLs, searched for the task names."}
    )
    num_fewshot: int | None = field(
        default=None, metadata={"help": "Few-shot examples per prompt for every task; unset: each task's own num_fewshot."}
    )
    fewshot_seed: int = field(
        default=1234, metadata={"help": "Seed of the few-shot sampler (lm-eval's fewshot_random_seed, 1234)."}
    )
    limit: int | None = field(default=None, metadata={"help": "Score only the first N documents of each task."})
    batch_size: int = field(default=8, metadata={"help": "Requests scored per forward pass (log-likelihood or generation)."})
    output_path: str | None = field(
        default=None, metadata={"help": "Directory for results.json (and samples_<task>.jsonl with log_samples)."}
    )
    log_samples: bool = field(
        default=False, metadata={"help": "Write each item's prompt, choices, log-likelihoods, prediction and target."}
    )
