"""What `lmforge eval` scores and where it writes, under lm-evaluation-harness's names.

    lmforge eval eval.yaml tasks=my_mc,my_ppl include_path=tasks/ num_fewshot=5 limit=100 output_path=out/
    lmforge eval eval.yaml task_dir=evaluation task=mmlu_test n_shot=5 lang=en      # LLaMA-Factory's layout
    lmforge eval eval.yaml tasks=lm:heldout.txt,lm:data/memmap_dir                   # loss / perplexity / bpb
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
    task_dir: str = field(
        default="evaluation",
        metadata={"help": "LLaMA-Factory's eval layout: a folder with one directory per task (mmlu/ with "
                          "mapping.json and <subject>_dev/_val/_test.csv)."},
    )
    task: str | None = field(
        default=None,
        metadata={"help": "LLaMA-Factory's eval task as <task>_<split> (mmlu_test, ceval_validation), read from "
                          "task_dir; scored as LLaMA-Factory scored it (letter logits, accuracy per subject and "
                          "category)."},
    )
    n_shot: int = field(
        default=5, metadata={"help": "Few-shot examples per question for `task`, drawn from the subject's dev split."}
    )
    lang: str = field(
        default="en", metadata={"help": "Prompt wording for `task`: en or zh (LLaMA-Factory's eval templates)."}
    )
