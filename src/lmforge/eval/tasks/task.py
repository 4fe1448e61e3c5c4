"""A task's scoring items: documents read from local files, each turned into the requests lm-eval would make.

    spec = read_task_yaml("tasks/mc.yaml")
    items = build_items(spec, num_fewshot=5, limit=100, seed=1234)
    items[0].requests      # [(context, " choice A"), (context, " choice B"), ...] for multiple_choice

Few-shot examples are drawn as lm-evaluation-harness draws them, so prompts match item for item: one
`random.Random(seed)` per task, advanced once per scored document in document order (only the first `limit`
documents draw), from fewshot_split (else the training, validation or test split); when the shots come from
the split being scored, n + 1 are drawn and the document itself is dropped.
"""

from __future__ import annotations

import random
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import DataError
from lmforge.eval.tasks.chat_context import PromptRenderer
from lmforge.eval.tasks.prompts import DocFormatter, build_context, coerce_gold, fewshot_sampler_pick
from lmforge.eval.tasks.spec import TaskSpec


@dataclass
class Item:
    """One scored document: its prompt, the requests to score and what counts as right."""

    doc_id: int
    doc: dict
    context: str
    requests: list[tuple[str, str]]  # (context, continuation); rolling: ("", text); generation: (context, "")
    choices: list[str] | None = None
    gold: Any = None  # multiple_choice: index or indices; generate_until / loglikelihood: the target text
    results: list = field(default_factory=list)  # filled by the scorer: (ll, is_greedy) per request, or text
    metrics: dict = field(default_factory=dict)  # this item's scores, filled by the runner


def load_split(spec: TaskSpec, split: str) -> list[dict]:
    """The records of one split, read with `datasets` as lm-eval reads them (same column types)."""
    import datasets

    files = spec.data_files[split]
    if all(_blank(Path(f)) for f in files if Path(f).is_file()):
        raise DataError(f"{spec.path}: the {split} split ({', '.join(files)}) is empty: no records to "
                        + ("score" if split == spec.eval_split else "draw few-shot examples from"))
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a "Generating split" bar per small file is noise in eval's output
    try:
        dataset = datasets.load_dataset(spec.builder, data_files={split: files}, split=split)
    except Exception as exc:  # noqa: BLE001 - any failure to parse a user's file is theirs to fix
        raise DataError(f"{spec.path}: dataset_kwargs.data_files: the {split} split ({', '.join(files)}) cannot be "
                        f"read as {spec.builder}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        ) from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    records = dataset.to_list()
    if not records:
        raise DataError(f"{spec.path}: the {split} split ({', '.join(files)}) has no records")
    return records


def _blank(path: Path) -> bool:
    """No bytes, or (a small text file) only whitespace: `datasets` fails on such a file with a bare StopIteration."""
    size = path.stat().st_size
    return size == 0 or (size < 4096 and not path.read_bytes().strip())


def build_items(spec: TaskSpec, *, num_fewshot: int | None = None, limit: int | None = None,
                seed: int = 1234, renderer: PromptRenderer | None = None) -> list[Item]:
    """The items of a task's eval split (the first `limit`), prompts built with `num_fewshot` shots
    (None: the task's own num_fewshot, else 0); `renderer`: lm-eval's apply_chat_template / system_instruction
    (chat_context.py), None: the plain prompt."""
    docs = load_split(spec, spec.eval_split)
    shots = spec.num_fewshot if num_fewshot is None else num_fewshot
    shots = shots or 0
    if spec.output_type == "loglikelihood_rolling":
        shots = 0  # whole documents are scored with no prompt, so shots do not apply (lm-eval draws and drops them)
    pool: list[dict] = []
    if shots:
        pool_split = spec.source_of_fewshot
        pool = docs if pool_split == spec.eval_split else load_split(spec, pool_split)  # type: ignore[arg-type]
    # column names are the scored split's for shots too: lm-eval checks doc_to_* against that split's features
    fmt = DocFormatter(spec, list(docs[0]))
    # lm-eval draws n + 1 and drops the scored document when fewshot_split equals test_split, compared as written:
    # a task with neither key (validation scored, shots from training_split) draws n + 1 too, and keeps the first n
    exclude_self = spec.fewshot_split == spec.test_split
    rnd = random.Random(seed)
    items = []
    for doc_id, doc in enumerate(docs[:limit] if limit else docs):
        picked = fewshot_sampler_pick(rnd, pool, shots, doc if exclude_self else None, spec.fewshot_sampler) if shots else []
        shot_docs = [(i, pool[i]) for i in picked]
        if spec.output_type == "loglikelihood_rolling":
            context = ""  # lm-eval scores whole documents with no prompt, chat template or not
        elif renderer is not None:
            context = renderer.context(spec, fmt, doc, doc_id, shot_docs)
        else:
            context = build_context(spec, fmt, doc, doc_id, shot_docs)
        delimiter = spec.target_delimiter if renderer is None else renderer.target_delimiter(spec)
        items.append(_item(spec, fmt, doc_id, doc, context, delimiter))
    return items


def _item(spec: TaskSpec, fmt: DocFormatter, doc_id: int, doc: dict, context: str, target_delimiter: str) -> Item:
    kind = spec.output_type
    if kind == "multiple_choice":
        choices = fmt.choices(doc, doc_id)
        gold = coerce_gold(fmt, doc, doc_id, choices)
        requests = [(context, f"{target_delimiter}{choice}") for choice in choices]
        return Item(doc_id, doc, context, requests, choices=choices, gold=gold)
    target = fmt.target(doc, doc_id)
    if kind == "loglikelihood_rolling":
        if not isinstance(target, str) or not target:
            raise DataError(f"{spec.path}: record {doc_id}: doc_to_target gave {target!r}; loglikelihood_rolling "
                            "needs the document's text")
        return Item(doc_id, doc, "", [("", target)], gold=target)
    if kind == "loglikelihood":
        # lm-eval scores the target exactly as rendered, with no target_delimiter in front
        return Item(doc_id, doc, context, [(context, str(target))], gold=str(target))
    if spec.doc_to_choice is not None:  # generate_until with choices: the target is an index into them
        choices = fmt.choices(doc, doc_id)
        gold_index = coerce_gold(fmt, doc, doc_id, choices)
        target = [choices[i] for i in gold_index] if isinstance(gold_index, list) else choices[gold_index]
    gold = [str(t) for t in target] if isinstance(target, list) else str(target)
    return Item(doc_id, doc, context, [(context, "")], gold=gold)
