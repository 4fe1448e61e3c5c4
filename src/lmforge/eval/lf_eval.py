"""Score LLaMA-Factory's eval layout (`task_dir`, `task: mmlu_test`, `n_shot`, `lang`) as its evaluator scored it.

    task = read_lf_task("evaluation", "mmlu_test")
    results, records = score_lf_task(task, model, tokenizer, template, n_shot=5, lang="en", batch_size=8)
    results["mmlu_test"]["acc,none"]       # the average over every question; also per category and subject

How LLaMA-Factory 0.9.5 scored (learned from its eval/evaluator.py, not copied): each question is rendered as
a one-turn chat through the model's template (shots as earlier turns), encoded up to the assistant's answer
slot; one forward pass; at the last prompt position the logits of the tokens of "A", "B", "C", "D" (the last
token each letter encodes to, without special tokens) are compared and the largest is the prediction (its
softmax over the four does not change the argmax; ties go to the earlier letter, as torch.argmax). Accuracy is
reported per subject, per category (STEM, Social Sciences, Humanities, Other; empty ones left out) and as
"Average" over all questions. Shots are drawn from the subject's dev split, `n_shot` per question (all of dev
when it is shorter). One deliberate difference: LLaMA-Factory shuffled dev with no seed, so its shots changed
from run to run; here they are a `random.Random(fewshot_seed)` sample, the same every run.
"""

from __future__ import annotations

import random

import torch

from lmforge.eval.tasks.lf_layout import CATEGORIES, CHOICES, LfTask, eval_prompt, lf_messages, read_subject
from lmforge.model.hidden_states import forward_hidden
from lmforge.types import Conversation, Message, Role


def choice_token_ids(tokenizer) -> list[int]:
    """The token each letter ends with, as LLaMA-Factory took them (no special tokens)."""
    return [tokenizer.encode(letter, add_special_tokens=False)[-1] for letter in CHOICES]


def encode_question(template, tokenizer, turns: list[tuple[str, str]]) -> list[int]:
    """The template's ids up to and including the assistant header of the last (user) turn."""
    conv = Conversation(messages=[Message(Role(role), content) for role, content in turns])
    return template.encode_prompt(tokenizer, conv)


@torch.no_grad()
def last_position_choice_logits(model, sequences: list[list[int]], choice_ids: list[int], batch_size: int,
                                pad_id: int) -> list[list[float]]:
    """The logits of `choice_ids` at each sequence's last position; sequences right-padded, longest first."""
    device = next(model.parameters()).device
    head = getattr(model, "module", model).get_output_embeddings()
    config = getattr(model.config, "text_config", None) or model.config
    softcap = getattr(config, "final_logit_softcapping", None)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: list[list[float] | None] = [None] * len(sequences)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(sequences[i])] = torch.tensor(sequences[i])
            mask[r, :len(sequences[i])] = 1
        _, hidden = forward_hidden(model, {"input_ids": ids.to(device), "attention_mask": mask.to(device)})
        last = hidden[torch.arange(len(rows), device=hidden.device), mask.sum(-1).to(hidden.device) - 1]
        # only the last position is projected, and only the four letter columns are kept
        logits = head(last).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        picked = logits[:, choice_ids].cpu().tolist()
        for r, i in enumerate(rows):
            out[i] = picked[r]
    return out  # type: ignore[return-value]


def score_lf_task(task: LfTask, model, tokenizer, template, *, n_shot: int, lang: str, batch_size: int,
                  limit: int | None = None, seed: int = 1234) -> tuple[dict, list[dict]]:
    """({name: {"acc,none": ..., "samples": n}} for the task, its categories and subjects; per-question records)."""
    prompt = eval_prompt(lang)
    choice_ids = choice_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rnd = random.Random(seed)
    by_category: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    per_subject: dict[str, list[bool]] = {}
    records: list[dict] = []
    for subject, info in task.subjects.items():
        rows = read_subject(task, subject, task.split)
        rows = rows[:limit] if limit else rows
        pool = read_subject(task, subject, "train") if n_shot else []
        sequences, prompts = [], []
        for row in rows:
            shots = [pool[i] for i in rnd.sample(range(len(pool)), min(n_shot, len(pool)))] if n_shot else []
            turns = lf_messages(row, shots, info["name"], prompt)
            prompts.append(turns)
            sequences.append(encode_question(template, tokenizer, turns))
        logits = last_position_choice_logits(model, sequences, choice_ids, batch_size, pad_id)
        correct = []
        for number, (row, turns, scores) in enumerate(zip(rows, prompts, logits)):
            prediction = CHOICES[max(range(len(CHOICES)), key=lambda k: (scores[k], -k))]
            correct.append(prediction == row["answer"])
            records.append({"subject": subject, "doc_id": number, "prompt": turns, "choice_logits": scores,
                            "prediction": prediction, "target": row["answer"], "acc": float(correct[-1])})
        per_subject[subject] = correct
        by_category[info["category"]] += correct
    every = [c for flags in per_subject.values() for c in flags]
    results = {task.label: _acc(every)}
    results.update({f"{task.label}_{c}": _acc(flags) for c, flags in by_category.items() if flags})
    results.update({f"{task.label}:{s}": _acc(flags) for s, flags in per_subject.items()})
    return results, records


def _acc(flags: list[bool]) -> dict:
    n = len(flags)
    mean = sum(flags) / n
    # the sample standard error of a mean of 0/1 values, as lm-eval reports acc_stderr
    stderr = (mean * (1 - mean) / (n - 1)) ** 0.5 if n > 1 else "N/A"
    return {"acc,none": mean, "acc_stderr,none": stderr, "samples": n}


def lf_score_lines(results: dict, task: LfTask) -> str:
    """LLaMA-Factory's own summary: Average then each non-empty category, in percent."""
    lines = [f"{'Average':>15}: {100 * results[task.label]['acc,none']:.2f}"]
    lines += [f"{c:>15}: {100 * results[f'{task.label}_{c}']['acc,none']:.2f}"
              for c in CATEGORIES if f"{task.label}_{c}" in results]
    return "\n".join(lines)
