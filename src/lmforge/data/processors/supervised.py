"""Conversation -> Example for supervised fine-tuning: one home for the labels.

Labels copy input_ids on every response turn (content and its end-of-turn tokens) and are IGNORE_INDEX on
prompt tokens, so the model learns what to say and when to stop, never to predict the user. The options
mirror LLaMA-Factory's:
  - `train_on_prompt`: prompt tokens are labelled too;
  - `mask_history`: only the last response is labelled, and the budget is spent from the last turn back;
  - `template.efficient_eos`: the eos that closes a response sits at the start of the next prompt (the
    template puts it there), so it is labelled there, and one eos closes the whole sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.processors.truncation import share_budget
from lmforge.types import IGNORE_INDEX, Conversation, Example


@dataclass(frozen=True)
class SupervisedOptions:
    cutoff_len: int
    train_on_prompt: bool = False
    mask_history: bool = False


def encode_supervised(conv: Conversation, template, tokenizer, options: SupervisedOptions) -> Example:
    """Tokenize one conversation and build its labels, truncated to `options.cutoff_len` tokens."""
    pairs = template.encode_turns(tokenizer, conv)
    efficient_eos = template.efficient_eos
    eos = tokenizer.eos_token_id
    used = 1 if efficient_eos else 0  # room for the closing eos
    turns = list(enumerate(pairs))
    if options.mask_history:
        turns.reverse()  # spend the budget on the last turn first

    pieces: list[tuple[list[int], list[int]]] = []
    for turn_idx, (prompt_ids, response_ids) in turns:
        if used >= options.cutoff_len:
            break
        kept_prompt, kept_response = share_budget(len(prompt_ids), len(response_ids), options.cutoff_len - used)
        prompt_ids, response_ids = prompt_ids[:kept_prompt], response_ids[:kept_response]
        used += kept_prompt + kept_response

        if options.train_on_prompt:
            prompt_labels = list(prompt_ids)
        elif efficient_eos and turn_idx != 0 and prompt_ids:
            # The eos closing the previous response opens this prompt; it is part of that response.
            prompt_labels = [eos] + [IGNORE_INDEX] * (len(prompt_ids) - 1)
        else:
            prompt_labels = [IGNORE_INDEX] * len(prompt_ids)
        is_last_turn = turn_idx == len(pairs) - 1
        if options.mask_history and not is_last_turn:
            response_labels = [IGNORE_INDEX] * len(response_ids)
        else:
            response_labels = list(response_ids)
        pieces.append((prompt_ids + response_ids, prompt_labels + response_labels))

    if options.mask_history:
        pieces.reverse()
    input_ids = [tok for ids, _ in pieces for tok in ids]
    labels = [lab for _, labs in pieces for lab in labs]
    if efficient_eos:
        input_ids.append(eos)
        labels.append(eos)
    return Example(input_ids=input_ids, attention_mask=[1] * len(input_ids), labels=labels)
