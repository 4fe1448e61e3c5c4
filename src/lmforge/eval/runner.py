"""`lmforge eval CONFIG [key=value ...]`: score a model on lm-evaluation-harness task files, locally.

    lmforge eval eval.yaml
    lmforge eval model_name_or_path=models/tiny tasks=mc_local,wiki_local include_path=tasks/ num_fewshot=5 \\
        limit=200 batch_size=16 output_path=runs/eval log_samples=true

The keys are lm-eval's (`tasks`, `include_path`, `num_fewshot`, `limit`, `batch_size` (or auto), `output_path`,
`log_samples`, `apply_chat_template`, `fewshot_as_multiturn`, `system_instruction`) plus lmforge's model keys (`model_name_or_path`, `adapter_name_or_path` merged at load,
`torch_dtype`, ...). Writes results.json (lm-eval's layout: "acc,none" and "acc_stderr,none" per task) and,
with log_samples, samples_<task>.jsonl: one record per document with its prompt, choices, log-likelihoods,
prediction and target. Prints a table of the results.

Prompts are the task's plain text unless `apply_chat_template` is set: then they are chat turns (lm-eval
0.4.13's layout, eval/tasks/chat_context.py) rendered with the run's chat template, the one named in
lmforge_run.json of the adapter or model (else the tokenizer's own chat_template, or a template named by
`apply_chat_template: <name>`).

Two more kinds of task, in the same run and the same table:
    lmforge eval model_name_or_path=models/tiny task_dir=evaluation task=mmlu_test n_shot=5 lang=en
        LLaMA-Factory's eval layout, scored as its evaluator scored it (eval/lf_eval.py): accuracy per subject
        (mmlu_test:<subject>), per category (mmlu_test_STEM, ...) and over all questions (mmlu_test).
    lmforge eval model_name_or_path=models/tiny tasks=lm:heldout.jsonl,lm:tokens_dir/
        held-out loss, perplexity and bits per byte (eval/lm_sets.py).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lmforge.config.adapter_args import HasAdapter
from lmforge.config.eval_args import EvalArguments, check_batch_size, fixed_batch_size
from lmforge.config.finetuning_args import FinetuningArguments
from lmforge.config.freeze_args import FreezeArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.config.model_args import ModelArguments
from lmforge.errors import ConfigError
from lmforge.eval.tasks import TaskSpec, build_items
from lmforge.eval.tasks.groups import aggregate_group
from lmforge.eval.tasks.registry import Selection, resolve_selection

EVAL_GROUPS = ("model", "finetuning", "lora", "freeze", "eval")
"""The config groups `lmforge eval` reads; a key of any other group is refused rather than ignored."""


@dataclass(frozen=True)
class EvalConfig(HasAdapter):
    model: ModelArguments
    eval: EvalArguments
    finetuning: FinetuningArguments = FinetuningArguments()
    lora: LoraArguments = LoraArguments()
    freeze: FreezeArguments = FreezeArguments()
    source: str = ""


def load_eval_config(path: str | None, overrides: list[str] | None = None) -> EvalConfig:
    """The eval keys of a YAML/JSON file plus key=value overrides, checked before torch loads."""
    from lmforge.config.loader import (KEY_GROUP, _light_groups, parse_overrides, read_config_file,
                                       route_and_coerce, validate_keys_only)
    from lmforge.config.validate import check_model_path

    raw = read_config_file(path) if path else {}
    raw.update(parse_overrides(overrides or []))
    source = str(path or "command line")
    validate_keys_only(raw, source)
    foreign = sorted(k for k in raw if KEY_GROUP.get(k) not in EVAL_GROUPS)
    if foreign:
        raise ConfigError(f"{source}: lmforge eval does not use {', '.join(repr(k) for k in foreign)} "
                          f"(keys of the {', '.join(sorted({KEY_GROUP.get(k, '?') for k in foreign}))} group); "
                          "take them out of the eval config")
    groups = _light_groups(route_and_coerce(raw, source, groups=EVAL_GROUPS), source)
    cfg = EvalConfig(**groups, source=source)
    if not cfg.model.model_name_or_path:
        raise ConfigError(f"{source}: set 'model_name_or_path' to a local model directory")
    check_model_path(cfg.model.model_name_or_path)
    check_batch_size(cfg.eval.batch_size, f"{source}: batch_size")
    if cfg.eval.fewshot_as_multiturn and not cfg.eval.apply_chat_template:
        raise ConfigError(f"{source}: fewshot_as_multiturn: true needs apply_chat_template (lm-eval's rule): the "
                          "turns are chat turns")
    if cfg.eval.apply_chat_template == "":
        raise ConfigError(f"{source}: apply_chat_template: expects true, false or a template name, got ''")
    if cfg.eval.limit is not None and cfg.eval.limit < 1:
        raise ConfigError(f"{source}: limit must be >= 1, got {cfg.eval.limit}")
    if cfg.eval.num_fewshot is not None and cfg.eval.num_fewshot < 0:
        raise ConfigError(f"{source}: num_fewshot must be >= 0, got {cfg.eval.num_fewshot}")
    if cfg.eval.n_shot < 0:
        raise ConfigError(f"{source}: n_shot must be >= 0, got {cfg.eval.n_shot}")
    if cfg.eval.task:
        from lmforge.eval.tasks.lf_layout import eval_prompt

        eval_prompt(cfg.eval.lang)  # an unknown lang stops here, before the model loads
    return cfg


def task_items(spec: TaskSpec, args: EvalArguments, renderer=None) -> list:
    """The items of one task under `args` (shots, limit, seed); `renderer`: the prompts as chat turns
    (`prompt_renderer`), None: plain text. Every data and template error surfaces here, before any scoring."""
    return build_items(spec, num_fewshot=args.num_fewshot, limit=args.limit, seed=args.fewshot_seed,
                       renderer=renderer)


def score_task(spec: TaskSpec, scorer, args: EvalArguments, renderer=None, items: list | None = None
               ) -> tuple[dict, list]:
    """({metric: value, metric_stderr: se, ...}, items) of one task, scored with `scorer`; `items`: built
    beforehand by `task_items` (None: built here)."""
    from lmforge.eval.metrics import aggregate, item_metrics

    if items is None:
        items = task_items(spec, args, renderer)
    kind = spec.output_type
    if kind == "generate_until":
        texts = scorer.generate_until([it.context for it in items], spec.until, spec.max_gen_toks, desc=spec.task)
        for item, text in zip(items, texts):
            item.results = [text]
    elif kind == "loglikelihood_rolling":
        lls = scorer.loglikelihood_rolling([it.gold for it in items], desc=spec.task)
        for item, ll in zip(items, lls):
            item.results = [ll]
    else:
        pairs = [pair for it in items for pair in it.requests]
        scores = iter(scorer.loglikelihood(pairs, desc=spec.task, items=len(items)))
        for item in items:
            item.results = [next(scores) for _ in item.requests]
    per_item = [item_metrics(spec, item) for item in items]
    results: dict[str, object] = {"alias": spec.task, "samples": len(items)}
    for metric in per_item[0]:
        value, stderr = aggregate(metric, [values[metric] for values in per_item])
        name, _, filter_name = metric.partition(",")
        suffix = filter_name or "none"
        results[f"{name},{suffix}"] = value
        results[f"{name}_stderr,{suffix}"] = "N/A" if stderr is None else stderr
    for item, values in zip(items, per_item):
        item.metrics = values
    return results, items


def run_eval(cfg: EvalConfig) -> dict:
    """Load the model (adapters merged), score every task, write and print the results; returns them."""
    lf_task = None
    if cfg.eval.task:  # LLaMA-Factory's layout; checked, like every task file, before the model loads
        from lmforge.eval.tasks.lf_layout import read_lf_task

        lf_task = read_lf_task(cfg.eval.task_dir, cfg.eval.task)
    from lmforge.eval.lm_sets import check_lm_source, is_lm_set

    names = [t.strip() for t in (cfg.eval.tasks or "").split(",") if t.strip()]
    lm_sets = [t for t in names if is_lm_set(t)]
    for name in lm_sets:
        check_lm_source(name)
    task_names = ",".join(t for t in names if not is_lm_set(t))
    selection = (resolve_selection(task_names, cfg.eval.include_path)
                 if task_names or (lf_task is None and not lm_sets) else Selection())
    specs = selection.specs
    from lmforge.eval.scoring import Scorer
    from lmforge.model.loader import load_model
    from lmforge.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    renderer = prompt_renderer(cfg, tokenizer) if specs else None  # a missing chat template stops before the model
    # every document read and every prompt written before the model loads: a bad record stops the run in seconds
    prebuilt = {spec.task: task_items(spec, cfg.eval, renderer) for spec in specs}
    adapter = replace(cfg.adapter, finetuning_type="lora" if cfg.model.adapter_name_or_path else "full")
    model = load_model(cfg.model, adapter, is_trainable=False)
    scorer = Scorer(model, tokenizer, batch_size=cfg.eval.batch_size)  # "auto" is the Scorer's to resolve
    report: dict = {"results": {}, "groups": {}, "group_subtasks": {}, "n-shot": {}, "n-samples": {}, "configs": {},
                    "timing": {}}
    all_items = {}
    for spec in specs:
        started = time.perf_counter()
        results, items = score_task(spec, scorer, cfg.eval, items=prebuilt[spec.task])
        seconds = time.perf_counter() - started
        report["results"][spec.task] = results
        shots = cfg.eval.num_fewshot if cfg.eval.num_fewshot is not None else (spec.num_fewshot or 0)
        report["n-shot"][spec.task] = shots
        report["n-samples"][spec.task] = {"effective": len(items)}
        report["configs"][spec.task] = {"task_file": str(spec.path), "output_type": spec.output_type,
                                        "metrics": list(spec.metrics)}
        report["timing"][spec.task] = {"seconds": round(seconds, 3), "items_per_second": round(len(items) / seconds, 2)}
        all_items[spec.task] = items
    if lm_sets:
        from lmforge.eval.lm_sets import lm_stream, score_lm_stream
        from lmforge.eval.scoring import max_length_of

        for name in lm_sets:
            report["results"][name] = score_lm_stream(lm_stream(name, tokenizer), model, tokenizer,
                                                      seq_len=max_length_of(model, tokenizer),
                                                      batch_size=fixed_batch_size(cfg.eval.batch_size))
            report["n-shot"][name] = 0
    if lf_task is not None:
        lf_results = score_lf(cfg, lf_task, model, tokenizer)
        report["results"].update(lf_results)
        report["n-shot"].update({name: cfg.eval.n_shot for name in lf_results})
    for group, leaves in selection.groups:  # lm-eval lists a group's row before its tasks' rows
        report["groups"][group.group] = aggregate_group(group, leaves, report["results"])
        report["group_subtasks"][group.group] = leaves
    report["results"] = {**report["groups"], **report["results"]}
    report["n-shot"].update({g: "" for g in report["groups"]})
    report["config"] = {"model_name_or_path": cfg.model.model_name_or_path,
                        "adapter_name_or_path": cfg.model.adapter_name_or_path,
                        **{k: v for k, v in asdict(cfg.eval).items()}}
    print(format_table(report))
    if cfg.eval.output_path:
        write_outputs(Path(cfg.eval.output_path), report, all_items, specs, cfg.eval.log_samples)
    return report


def prompt_renderer(cfg: EvalConfig, tokenizer):
    """The chat rendering of lm-eval's apply_chat_template / fewshot_as_multiturn / system_instruction for the
    task files, or None when none is set (plain prompts)."""
    from lmforge.eval.tasks.chat_context import PromptRenderer, chat_template_for

    if not cfg.eval.apply_chat_template and cfg.eval.system_instruction is None:
        return None
    from lmforge.run_info import trained_setting

    template = default_system = None
    if cfg.eval.apply_chat_template:
        template = chat_template_for(cfg.eval.apply_chat_template, cfg.model.adapter_name_or_path,
                                     cfg.model.model_name_or_path, tokenizer, cfg.source)
        if cfg.eval.apply_chat_template is True:  # the run's template comes with the run's system prompt
            default_system = trained_setting("default_system", cfg.model.adapter_name_or_path,
                                             cfg.model.model_name_or_path)
    return PromptRenderer(template, tokenizer, fewshot_as_multiturn=cfg.eval.multiturn,
                          system_instruction=cfg.eval.system_instruction, default_system=default_system)


def score_lf(cfg: EvalConfig, task, model, tokenizer) -> dict:
    """LLaMA-Factory's eval layout through the run's chat template (lmforge_run.json, else the tokenizer's own,
    else `empty`, as LLaMA-Factory chose when `template` was unset); prints its summary lines, writes
    samples_<task>.jsonl with log_samples."""
    from lmforge.data.templates import resolve_template
    from lmforge.eval.lf_eval import lf_score_lines, score_lf_task
    from lmforge.run_info import trained_setting, trained_template

    paths = (cfg.model.adapter_name_or_path, cfg.model.model_name_or_path)
    # the run's enable_thinking comes with its template (false: a reasoning row's prompts end with the empty block)
    thinking = trained_setting("enable_thinking", *paths) is not False
    template = resolve_template(trained_template(*paths), tokenizer, thinking)
    results, records = score_lf_task(task, model, tokenizer, template, n_shot=cfg.eval.n_shot, lang=cfg.eval.lang,
                                     batch_size=fixed_batch_size(cfg.eval.batch_size), limit=cfg.eval.limit, seed=cfg.eval.fewshot_seed)
    print(lf_score_lines(results, task))
    if cfg.eval.output_path and cfg.eval.log_samples:
        out = Path(cfg.eval.output_path)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"samples_{task.label}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return results


def write_outputs(out: Path, report: dict, all_items: dict, specs: list[TaskSpec], log_samples: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if not log_samples:
        return
    for spec in specs:
        with open(out / f"samples_{spec.task}.jsonl", "w", encoding="utf-8") as f:
            for item in all_items[spec.task]:
                f.write(json.dumps(sample_record(spec, item), ensure_ascii=False, default=str) + "\n")


def sample_record(spec: TaskSpec, item) -> dict:
    record = {"doc_id": item.doc_id, "doc": item.doc, "prompt": item.context, "target": item.gold,
              "arguments": [list(r) for r in item.requests], "metrics": item.metrics}
    if spec.output_type in ("multiple_choice", "loglikelihood"):
        record["loglikelihoods"] = [ll for ll, _ in item.results]
        record["is_greedy"] = [g for _, g in item.results]
    if spec.output_type == "multiple_choice":
        lls = record["loglikelihoods"]
        record["choices"] = item.choices
        record["prediction"] = max(range(len(lls)), key=lambda i: (lls[i], -i))
    elif spec.output_type == "loglikelihood_rolling":
        record["loglikelihood"] = item.results[0]
    elif spec.output_type == "generate_until":
        from lmforge.eval.tasks.filters import apply_filter

        record["prediction"] = item.results[0]
        record["filtered"] = {name: apply_filter(steps, item.results[0]) for name, steps in spec.filters.items()}
    return record


def format_table(report: dict) -> str:
    """lm-eval's results table: task, filter, n-shot, metric, value, stderr."""
    rows = [("Tasks", "Filter", "n-shot", "Metric", "Value", "Stderr")]
    for task, results in report["results"].items():
        for key, value in results.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filter_name = key.split(",", 1)
            stderr = results.get(f"{metric}_stderr,{filter_name}", "N/A")
            rows.append((task, filter_name, str(report["n-shot"][task]), metric, f"{value:.4f}",
                         stderr if isinstance(stderr, str) else f"{stderr:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["|" + "|".join(f" {cell:<{w}} " for cell, w in zip(row, widths)) + "|" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


USAGE = __doc__.split("\n\n")[0] + "\n\nusage: lmforge eval CONFIG [key=value ...]   (keys: lmforge train --help eval)"


def eval_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    path, overrides = (None, argv) if "=" in argv[0] else (argv[0], argv[1:])
    run_eval(load_eval_config(path, overrides))
    sys.stdout.flush()
    return 0
