"""Batched greedy generation and exact-match accuracy, through the same template the model trained with."""

from __future__ import annotations

import torch

from lmforge.types import Conversation


@torch.no_grad()
def greedy_replies(model, tokenizer, template, prompts: list[Conversation], max_new_tokens: int = 32,
                   batch_size: int = 64) -> list[str]:
    """The greedy reply to each prompt (a conversation ending with a user turn)."""
    model.eval()
    stop_ids = template.stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [template.encode_prompt(tokenizer, conv) for conv in prompts[start : start + batch_size]]
        width = max(len(ids) for ids in encoded)
        # Left padding keeps every prompt's last token at the same position, where generation starts.
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
        )
        for row in output[:, width:].tolist():
            cut = next((i for i, tok in enumerate(row) if tok in stop_ids), len(row))
            replies.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return replies


def exact_match_accuracy(replies: list[str], answers: list[str]) -> float:
    if not answers:
        return 0.0
    return sum(r.strip() == a.strip() for r, a in zip(replies, answers)) / len(answers)
