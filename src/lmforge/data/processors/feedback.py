"""Conversation + kto_tag -> a (prompt, response) row and a mismatched (prompt, other response) row, for kto.

KTO estimates KL(policy || reference) on responses that do not belong to their prompt. As in trl, the
mismatched response of sample i is the response of sample i + 1 of the same processing batch (the last
takes the first's), so no sample is paired with its own response unless a batch holds only one sample.
Each row is truncated on its own with `truncation.share_budget`; labels cover the response only.
"""

from __future__ import annotations

from lmforge.data.processors.pairwise import prompt_and_response
from lmforge.data.processors.truncation import share_budget
from lmforge.types import IGNORE_INDEX, Conversation, Message


def encode_feedback(conv: Conversation, kl_response: Message, template, tokenizer, cutoff_len: int) -> dict[str, list[int]]:
    """input_ids / labels of the sample and kl_input_ids / kl_labels of its prompt with `kl_response`."""
    prompt = Conversation(conv.messages[:-1], conv.system, conv.tools)
    out: dict[str, list[int]] = {}
    for prefix, response in (("", conv.messages[-1]), ("kl_", kl_response)):
        prompt_ids, response_ids = prompt_and_response(prompt, response, template, tokenizer)
        kept_prompt, kept_response = share_budget(len(prompt_ids), len(response_ids), cutoff_len)
        prompt_ids, response_ids = prompt_ids[:kept_prompt], response_ids[:kept_response]
        out[f"{prefix}input_ids"] = prompt_ids + response_ids
        out[f"{prefix}labels"] = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return out


def mismatched_responses(convs: list[Conversation]) -> list[Message]:
    """The response each sample is paired with for the KL estimate: the next sample's (cyclically)."""
    return [convs[(i + 1) % len(convs)].messages[-1] for i in range(len(convs))]
