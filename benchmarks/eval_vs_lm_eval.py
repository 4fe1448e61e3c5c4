"""Scoring speed of `lmforge eval` against lm-evaluation-harness (`lm_eval`'s `hf` model), items per second on the
same model, the same task files and the same machine, in one process.

    python benchmarks/eval_vs_lm_eval.py                                  # small-qwen2 (56M, 32k vocab), fp32
    python benchmarks/eval_vs_lm_eval.py --tasks hellaswag_local,arc_easy_local --limit 40 --batch-size 16

The model is created locally (`create_model("small-qwen2")`, 8 layers x 512, a 32,000-row untied embedding and
head: the head is 58% of its parameters, so work spent on vocabulary logits shows) and loaded once; both tools
score it in float32 on the CPU with the same batch size. The tasks (`write_like_tasks`) have the prompt formats and
token lengths of MMLU, HellaSwag, ARC and PIQA with every document distinct (the shipped examples/eval/tasks repeat
contexts, which both tools deduplicate, so they understate the work; `--task-dir` runs any directory). Timed is the scoring alone: each tool builds its requests from the task file first
(untimed: lm-eval's TaskManager indexes its thousands of bundled task files, which says nothing about scoring),
then lm-eval's `HFLM.loglikelihood(instances)` and lmforge's `Scorer.loglikelihood(pairs)` are timed. Each task
is scored `--repeats` times by each tool, alternating, and the best time of each is kept. Both tools' per-item
log-likelihoods are compared as a check that they did the same work.

What differs in the work (see eval/scoring.py and eval/shared_prefix.py): lm-eval feeds context + choice once per
choice and projects every position of every row to the vocabulary (then log_softmax over all of them); lmforge
feeds a question's context once with its choices behind a block mask, and projects only the continuation
positions.

Run it alone on the machine: two torch processes on 2 cores slow each other unevenly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TASKS = "mmlu_like,hellaswag_like,arc_like,piqa_like"

WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact be have do say get make go know take see come think look "
         "want give use find tell ask seem feel try leave call good new first last long great little own other old "
         "right big high different small large next early young important few public bad same able river garden "
         "kitchen window paper table water light music story letter market doctor teacher village mountain winter "
         "summer animal bread horse engine bottle station island forest camera wheel ladder pocket candle").split()


def write_like_tasks(root: Path, n: int = 40, seed: int = 0) -> Path:
    """Four tasks with the prompt formats of MMLU, HellaSwag, ARC and PIQA in lm-eval (their YAMLs' doc_to_*),
    and the token lengths of the real data (HellaSwag: ~40-word contexts and four ~20-word endings; ARC: ~25-word
    questions and short answers; PIQA: a short goal and two ~20-word solutions; MMLU: ~50-word questions with
    four options and letter answers), every document distinct: random words, so sharing work between documents
    is impossible and only the sharing within a question counts."""
    rnd = random.Random(seed)

    def words(low: int, high: int) -> str:
        return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(low, high)))

    def split_rows(make) -> dict[str, list[dict]]:
        return {"test": [make() for _ in range(n)], "train": [make() for _ in range(12)]}

    tasks = {
        "mmlu_like": (lambda: {"question": words(30, 70) + "?", "choices": [words(1, 6) for _ in range(4)],
                               "answer": rnd.randrange(4)},
                      'doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. '
                      '{{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"\ndoc_to_choice: ["A", "B", "C", "D"]\n'
                      "doc_to_target: answer\n"),
        "hellaswag_like": (lambda: {"query": words(25, 55), "choices": [words(12, 28) for _ in range(4)],
                                    "gold": rnd.randrange(4)},
                           'doc_to_text: "{{query}}"\ndoc_to_choice: "choices"\ndoc_to_target: gold\n'),
        "arc_like": (lambda: {"question": words(15, 35) + "?", "choices": [words(1, 5) for _ in range(4)],
                              "answer": rnd.randrange(4)},
                     'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "choices"\n'
                     "doc_to_target: answer\n"),
        "piqa_like": (lambda: {"goal": words(5, 15), "sol1": words(10, 30), "sol2": words(10, 30),
                               "label": rnd.randrange(2)},
                      'doc_to_text: "Question: {{goal}}\\nAnswer:"\ndoc_to_choice: "{{[sol1, sol2]}}"\n'
                      "doc_to_target: label\n"),
    }
    for name, (make, prompt) in tasks.items():
        files = {}
        for split, rows in split_rows(make).items():
            files[split] = root / f"{name}_{split}.jsonl"
            files[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {files['test']}\n"
            f"    train: {files['train']}\ntest_split: test\nfewshot_split: train\noutput_type: multiple_choice\n"
            f"{prompt}metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return root


def lmforge_scores(scorer, task_dir: Path, task: str, limit: int, shots: int | None):
    """(seconds scoring, items, per-item log-likelihoods): the task's requests built first, untimed."""
    from lmforge.eval.tasks import build_items
    from lmforge.eval.tasks.registry import resolve_selection

    (spec,) = resolve_selection(task, str(task_dir)).specs
    items = build_items(spec, num_fewshot=shots, limit=limit)
    pairs = [pair for item in items for pair in item.requests]
    started = time.perf_counter()
    scores = scorer.loglikelihood(pairs, items=len(items))
    seconds = time.perf_counter() - started
    lls, at = [], 0
    for item in items:
        lls.append([ll for ll, _ in scores[at:at + len(item.requests)]])
        at += len(item.requests)
    return seconds, len(items), lls


def lm_eval_scores(lm, task_manager, task: str, limit: int, shots: int | None):
    """The same for lm-eval: its task builds its requests (untimed), its `hf` model scores them."""
    from lm_eval.tasks import get_task_dict

    task_obj = get_task_dict([task], task_manager)[task]
    if shots is not None:
        task_obj.set_config(key="num_fewshot", value=shots)
    task_obj.set_fewshot_seed(seed=1234)  # what simple_evaluate does (lm-eval's fewshot_random_seed default)
    task_obj.build_all_requests(limit=limit)
    instances = task_obj.instances
    started = time.perf_counter()
    responses = lm.loglikelihood(instances, disable_tqdm=True)
    seconds = time.perf_counter() - started
    by_doc: dict[int, list[tuple[int, float]]] = {}
    for instance, (ll, _) in zip(instances, responses):
        by_doc.setdefault(instance.doc_id, []).append((instance.idx, float(ll)))
    lls = [[ll for _, ll in sorted(by_doc[d])] for d in sorted(by_doc)]
    return seconds, len(lls), lls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--task-dir", type=Path, help="a directory of task YAMLs (default: the *_like tasks, "
                        "written to a temporary directory)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="small-qwen2")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.model.from_config import create_model

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.task_dir is None:
            args.task_dir = write_like_tasks(Path(tmp))
        model_dir = create_model(args.preset, Path(tmp) / "model", seed=0)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device="cpu")
        from lm_eval.tasks import TaskManager

        from lmforge.eval.scoring import Scorer

        task_manager = TaskManager(include_path=str(args.task_dir))
        scorer = Scorer(model, tokenizer, batch_size=args.batch_size, progress=False)
        rows = []
        print(f"torch threads {torch.get_num_threads()}, model {args.preset} fp32, batch {args.batch_size}, "
              f"limit {args.limit}", flush=True)
        for task in args.tasks.split(","):
            ours, theirs = [], []
            for _ in range(args.repeats):
                theirs.append(lm_eval_scores(lm, task_manager, task, args.limit, args.num_fewshot))
                ours.append(lmforge_scores(scorer, args.task_dir, task, args.limit, args.num_fewshot))
            t_ours, n, ll_ours = min(ours, key=lambda r: r[0])
            t_theirs, n_theirs, ll_theirs = min(theirs, key=lambda r: r[0])
            assert n == n_theirs, (task, n, n_theirs)
            diff = max(abs(a - b) for x, y in zip(ll_ours, ll_theirs) for a, b in zip(x, y))
            row = {"task": task, "items": n, "lm_eval_items_per_s": n / t_theirs, "lmforge_items_per_s": n / t_ours,
                   "speedup": t_theirs / t_ours, "max_loglik_diff": diff}
            rows.append(row)
            print(f"{task:36s} items {n:4d}  lm-eval {row['lm_eval_items_per_s']:7.2f}/s  lmforge "
                  f"{row['lmforge_items_per_s']:7.2f}/s  x{row['speedup']:.2f}  max |dll| {diff:.1e}", flush=True)
        total_theirs = sum(r["items"] / r["lm_eval_items_per_s"] for r in rows)
        total_ours = sum(r["items"] / r["lmforge_items_per_s"] for r in rows)
        print(f"{'all':36s} items {sum(r['items'] for r in rows):4d}  lm-eval {total_theirs:7.1f} s  lmforge "
              f"{total_ours:7.1f} s  x{total_theirs / total_ours:.2f}")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
