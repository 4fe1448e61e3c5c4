"""Conversation -> prompt ids to generate from and the reference answer, for predict_with_generate.

The prompt is every turn before the last response, rendered by the template up to the assistant header (the
same ids `lmforge chat` would send); the reference is that last response. Both share `cutoff_len` by the
training rule (`share_budget`). A prompt that must be cut loses its *start*, not its end: the end holds the
assistant header the model needs to answer (LLaMA-Factory cuts the end).
"""

from __future__ import annotations

from lmforge.data.processors.pairwise import prompt_and_response
from lmforge.data.processors.truncation import share_budget
from lmforge.types import Conversation, Role


def encode_for_generation(conv: Conversation, template, tokenizer, cutoff_len: int) -> dict:
    """{"input_ids": prompt ids, "labels": reference response ids, "reference": its text, "truncated": bool}."""
    *turns, response = conv.messages
    if response.role not in (Role.ASSISTANT, Role.FUNCTION):
        raise ValueError("a conversation to predict must end with the reference response")
    prompt_ids, response_ids = prompt_and_response(Conversation(turns, conv.system, conv.tools), response,
                                                   template, tokenizer)
    kept_prompt, kept_response = share_budget(len(prompt_ids), len(response_ids), cutoff_len)
    truncated = kept_prompt < len(prompt_ids) or kept_response < len(response_ids)
    reference = response.content
    if kept_response < len(response_ids):
        reference = tokenizer.decode(response_ids[:kept_response], skip_special_tokens=True).strip()
    return {"input_ids": prompt_ids[len(prompt_ids) - kept_prompt :], "labels": response_ids[:kept_response],
            "reference": reference, "truncated": truncated}
