"""What `lmforge eval` scores and where it writes, under lm-evaluation-harness's names.

    lmforge eval eval.yaml tasks=my_mc,my_ppl include_path=tasks/ num_fewshot=5 limit=100 output_path=out/
    lmforge eval eval.yaml task_dir=evaluation task=mmlu_test n_shot=5 lang=en      # LLaMA-Factory's layout
    lmforge eval eval.yaml tasks=lm:heldout.txt,lm:data/memmap_dir                   # loss / perplexity / bpb
    lmforge eval eval.yaml tasks=my_mc apply_chat_template=true fewshot_as_multiturn=false batch_size=auto
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.errors import ConfigError


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
    batch_size: int | str = field(
        default=8,
        metadata={"help": "Requests scored per forward pass (log-likelihood or generation), or auto (lm-eval's "
                          "--batch_size auto: the largest batch that fits, found by the scorer). LLaMA-Factory-layout "
                          "tasks (`task`) and lm: sets score 8 at a time under auto. lm-eval's auto:N is not supported."},
    )
    output_path: str | None = field(
        default=None, metadata={"help": "Directory for results.json (and samples_<task>.jsonl with log_samples)."}
    )
    apply_chat_template: bool | str = field(
        default=False,
        metadata={"help": "Write each prompt as chat turns rendered with the chat template (lm-eval's "
                          "--apply_chat_template), for chat models: true = the template the run was trained with "
                          "(lmforge_run.json of the adapter, then the model), else the tokenizer's own chat_template; "
                          "or a template name (chatml, qwen, llama3, ..., auto = the tokenizer's). The description "
                          "and system_instruction become the system turn; multiple_choice answers follow the "
                          "assistant header with no target delimiter."},
    )
    fewshot_as_multiturn: bool | None = field(
        default=None,
        metadata={"help": "With apply_chat_template, each few-shot example as its own user and assistant turn; false: "
                          "all shots and the question in one user message. Unset: true with apply_chat_template "
                          "(lm-eval 0.4.13's default)."},
    )
    system_instruction: str | None = field(
        default=None,
        metadata={"help": "A system prompt before each task's description (lm-eval's --system_instruction): the "
                          "system turn with apply_chat_template, else written in front of the prompt."},
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

    @property
    def multiturn(self) -> bool:
        """fewshot_as_multiturn as lm-eval 0.4.13 resolves it: unset follows apply_chat_template."""
        return bool(self.apply_chat_template) if self.fewshot_as_multiturn is None else self.fewshot_as_multiturn


AUTO_BATCH_FALLBACK = 8
"""The batch size of the scorers that take a fixed one (eval/lm_sets.py, eval/lf_eval.py) under batch_size auto."""


def fixed_batch_size(batch_size: int | str) -> int:
    """`batch_size` for a scorer without auto detection: auto becomes AUTO_BATCH_FALLBACK."""
    return AUTO_BATCH_FALLBACK if batch_size == "auto" else int(batch_size)


def check_batch_size(value, where: str) -> int | str:
    """An integer >= 1 or "auto"; a ConfigError naming `where` otherwise (lm-eval's auto:N is refused)."""
    if value == "auto":
        return value
    if isinstance(value, str) and value.startswith("auto:"):
        raise ConfigError(f"{where}: {value!r} (lm-eval's auto:N, re-detecting the batch size N times) is not "
                          "supported; use auto or an integer >= 1")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expects an integer >= 1 or auto, got {value!r}")
    return value
