"""Batched greedy generation and exact-match accuracy, through the same template the model trained with."""

from __future__ import annotations

from lmforge.types import Conversation

def greedy_replies(model, tokenizer, template, prompts: list[Conversation], max_new_tokens: int = 32,
                   batch_size: int = 64, progress: str | None = None) -> list[str]:
    """The greedy reply to each prompt (a conversation ending with a user turn); `progress` labels a bar."""
    from lmforge.eval.predict import generate_batched

    model.eval()
    encoded = [template.encode_prompt(tokenizer, conv) for conv in prompts]
    generated = generate_batched(model, tokenizer, encoded, template.stop_token_ids(tokenizer), batch_size,
                                 progress=progress, max_new_tokens=max_new_tokens, do_sample=False)
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]

def exact_match_accuracy(replies: list[str], answers: list[str]) -> float:
    if not answers:
        return 0.0
    return sum(r.strip() == a.strip() for r, a in zip(replies, answers)) / len(answers)
