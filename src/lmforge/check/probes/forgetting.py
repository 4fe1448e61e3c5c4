"""Probe `forgetting`: how much general ability and general next-token behaviour the fine-tune cost.

    check:
      forgetting: {fail_above: 0.15}
      forgetting: {tasks: "hellaswag_local", include_path: tasks/, limit: 100}    # lm-eval task files instead

What: the base and the tuned model on general items (assets/general_mc.json: 32 everyday multiple-choice
questions — arithmetic, word forms, common facts — shipped in the package, no download), and on a general
text set (assets/general_text.txt: paragraphs of plain English). With the `tasks` (and `include_path`,
`limit`) settings, lm-evaluation-harness task files scored by `lmforge eval`'s runner replace the built-in
items.

Why: fine-tuning on a narrow task drifts the model away from what the base knew ("catastrophic forgetting");
an accuracy drop on general items and the distance between the two models' next-token distributions on
ordinary text show it without a benchmark download.

How: each question is scored as lm-eval scores a multiple-choice item (`Scorer.loglikelihood` of
" <choice>" after "Question: ...\\nAnswer:"; the most likely choice is the answer), for both models.
value = base accuracy - tuned accuracy (FAIL above `fail_above`, WARN above `warn_above`). Details: both
accuracies, and on the text set (each paragraph up to `max_tokens` tokens) the next-token agreement (share of
positions where both models' argmax is equal) and the mean KL(base || tuned) in nats per token. Skipped when
the base model is unknown.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.check.probe import PROBES, Example, Probe, ProbeResult

NAME = "forgetting"
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def general_items() -> list[dict]:
    """The built-in multiple-choice items: {"question", "choices", "answer": index of the right choice}."""
    return json.loads((ASSETS / "general_mc.json").read_text(encoding="utf-8"))


def general_texts() -> list[str]:
    """The built-in text set: paragraphs separated by blank lines."""
    text = (ASSETS / "general_text.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def mc_accuracy(model, tokenizer, items: list[dict]) -> tuple[float, list[int]]:
    """(accuracy, the chosen index per item): the choice with the highest log-likelihood, lm-eval's `acc`."""
    from lmforge.eval.scoring import Scorer

    scorer = Scorer(model, tokenizer, batch_size=16, progress=False)
    pairs = [(f"Question: {it['question']}\nAnswer:", f" {choice}") for it in items for choice in it["choices"]]
    scores = iter(scorer.loglikelihood(pairs, items=len(items)))
    chosen = []
    for it in items:
        lls = [next(scores)[0] for _ in it["choices"]]
        chosen.append(max(range(len(lls)), key=lls.__getitem__))
    return sum(c == it["answer"] for c, it in zip(chosen, items)) / len(items), chosen


@torch.no_grad()
def next_token_divergence(reference, other, token_lists: list[list[int]], starts: list[int] | None = None
                          ) -> tuple[float, float, int]:
    """(agreement, mean KL(reference || other) in nats, positions) over the next-token predictions of every token
    list from position `starts[i]` on (None: all of them): agreement = share of positions where both argmax
    tokens are equal; KL from the full softmax of each, KL(p||q) = sum p (log p - log q)."""
    agree, kl, count = 0, 0.0, 0
    for i, ids in enumerate(token_lists):
        start = starts[i] if starts else 0
        if len(ids) <= start:
            continue
        logp = [torch.log_softmax(_logits(model, ids)[start:], dim=-1) for model in (reference, other)]
        agree += int((logp[0].argmax(-1) == logp[1].argmax(-1)).sum())
        # clamp: rounding can make a near-zero KL slightly negative
        kl += float((logp[0].exp() * (logp[0] - logp[1])).sum(-1).clamp_min(0).sum())
        count += len(ids) - start
    return (agree / count if count else 1.0), (kl / count if count else 0.0), count


def _logits(model, ids: list[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()


def _task_scores(settings: dict, model, tokenizer) -> dict[str, float]:
    """{task: first metric} of the lm-eval task files named by `tasks` / `include_path` (`lmforge eval`'s runner)."""
    from lmforge.config.eval_args import EvalArguments
    from lmforge.eval.runner import score_task, task_items
    from lmforge.eval.scoring import Scorer
    from lmforge.eval.tasks.registry import resolve_selection

    args = EvalArguments(tasks=settings["tasks"], include_path=settings.get("include_path"),
                         limit=settings.get("limit"))
    scorer = Scorer(model, tokenizer, batch_size=16, progress=False)
    scores = {}
    for spec in resolve_selection(settings["tasks"], settings.get("include_path")).specs:
        results, _ = score_task(spec, scorer, args, items=task_items(spec, args))
        metric = next(k for k, v in results.items() if isinstance(v, (int, float)) and k != "samples"
                      and "_stderr" not in k)
        scores[f"{spec.task} {metric}"] = float(results[metric])
    return scores


def run_forgetting(ctx, settings: dict) -> ProbeResult:
    base = ctx.base()
    if base is None:
        return ProbeResult.skipped(NAME, "no base model to compare with (the run names none)")
    tuned = ctx.tuned()
    tokenizer = tuned.tokenizer
    details: dict = {}
    examples = []
    if settings.get("tasks"):
        base_scores = _task_scores(settings, base.model, tokenizer)
        tuned_scores = _task_scores(settings, tuned.model, tokenizer)
        details.update(base_scores={k: round(v, 4) for k, v in base_scores.items()},
                       tuned_scores={k: round(v, 4) for k, v in tuned_scores.items()})
        base_acc = sum(base_scores.values()) / len(base_scores)
        tuned_acc = sum(tuned_scores.values()) / len(tuned_scores)
        what = f"the mean of {len(base_scores)} lm-eval task metrics"
    else:
        items = general_items()
        base_acc, base_chosen = mc_accuracy(base.model, tokenizer, items)
        tuned_acc, tuned_chosen = mc_accuracy(tuned.model, tokenizer, items)
        examples = [Example(f"lmforge/check/assets/general_mc.json:{i}", it["question"], it["choices"][t],
                            it["choices"][it["answer"]], note=f"the base model chose {it['choices'][b]!r}")
                    for i, (it, b, t) in enumerate(zip(items, base_chosen, tuned_chosen))
                    if b == it["answer"] != t][:settings.get("examples", 5)]
        what = f"{len(items)} built-in general questions"
    max_tokens = int(settings["max_tokens"])
    token_lists = [tokenizer.encode(text)[:max_tokens] for text in general_texts()]
    agreement, kl, positions = next_token_divergence(base.model, tuned.model, token_lists)
    details.update(base_accuracy=base_acc, tuned_accuracy=tuned_acc, next_token_agreement=agreement,
                   mean_kl_base_tuned=kl, text_positions=positions)
    return ProbeResult.judge(NAME, base_acc - tuned_acc, settings,
                             unit=f"accuracy drop, base - tuned, on {what} (base {base_acc:.2f}, tuned "
                                  f"{tuned_acc:.2f}); next-token agreement {agreement:.3f}, KL {kl:.4f} nats/token",
                             examples=examples, details=details)


PROBES.add(NAME, Probe(
    name=NAME, summary="general questions and text, base vs tuned: accuracy drop, next-token agreement and KL",
    run=run_forgetting,
    defaults={"fail_above": 0.15, "warn_above": 0.05, "max_tokens": 128, "tasks": None, "include_path": None,
              "limit": None, "examples": 5}))
