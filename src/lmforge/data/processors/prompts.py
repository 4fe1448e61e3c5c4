"""Conversation -> the prompt ids a policy samples from, and the reference answer its rewards compare with (grpo, ppo).

Any sft-style record serves: the prompt is every turn before the last response, rendered by the template up to
the assistant header (what `lmforge chat` would send, thinking settings and default system included); a record
whose last turn is the user's has no reference. The reference (`answer`) is the last response's text, which the
reward functions receive as `answer`; `prompt` is the last user turn's text, which they receive as the prompt.
A prompt longer than `cutoff_len` loses its start, never the assistant header at its end.
"""

from __future__ import annotations

from lmforge.types import Conversation, Role


def encode_prompt_row(conv: Conversation, template, tokenizer, cutoff_len: int) -> dict:
    """{"input_ids": prompt ids, "prompt": the last user turn, "answer": the reference response ("" if none),
    "truncated": the prompt lost its start}."""
    messages = list(conv.messages)
    answer = ""
    if messages and messages[-1].role in (Role.ASSISTANT, Role.FUNCTION):
        answer = messages.pop().content
    ids = template.encode_prompt(tokenizer, Conversation(messages, conv.system, conv.tools))
    users = [m.content for m in messages if m.role == Role.USER]
    return {"input_ids": ids[max(0, len(ids) - cutoff_len):], "prompt": users[-1] if users else "",
            "answer": answer, "truncated": len(ids) > cutoff_len}
