"""Thinking blocks of reasoning templates (qwen3, deepseekr1), as LLaMA-Factory's ReasoningTemplate treats them.

A row with `thought_words` (e.g. ("<think>\\n", "\\n</think>\\n\\n")) is a reasoning template. Its
`enable_thinking` (the config key of the same name, LLaMA-Factory's, default true) decides where the *empty*
block `<think>\\n\\n</think>\\n\\n` goes for an answer that has none:

    enable_thinking: true   the block opens the answer (response ids: trained on), thoughts in the data are kept
    enable_thinking: false  thoughts are removed from every answer and the block closes the prompt (not trained)

Training (a conversation ending with a response) follows LLaMA-Factory's `encode_multiturn`: every answer is
handled so, history included. Generation (a conversation ending with a prompt: `encode_prompt`, chat, api,
predict) follows its `encode_oneturn`: earlier answers lose their thoughts and get no block, and the prompt
ends with the empty block when enable_thinking is false. That is exactly what Qwen3's own chat template
renders with add_generation_prompt (it drops the reasoning of turns before the last user query, and appends
the empty block when enable_thinking=False).

Where training and Qwen3's template differ (tests/data/test_reasoning_templates.py asserts each):
  * later turns of a multi-turn sample see earlier answers WITH their thoughts (or the empty block, or with
    enable_thinking false the block at the end of each prompt), because every answer is trained in one
    sequence; Qwen3's template (and generation) shows earlier answers without them;
  * with enable_thinking false, thoughts in the data are removed and the empty block is a prompt token;
    Qwen3's template would render them (its enable_thinking only changes the generation prompt).
The first turn's prompt is always the generation prompt for that history, token for token.

Not followed yet: LLaMA-Factory's mask_history also drops earlier turns' thoughts (`discarding_history_cot`),
and its pairwise processor renders the history as generation does; here both see the training rendering.
"""

from __future__ import annotations

import re
from dataclasses import replace

from lmforge.types import RESPONSE_ROLES, Conversation


def empty_thought(thought_words: tuple[str, str]) -> str:
    """The empty reasoning block, e.g. '<think>\\n\\n</think>\\n\\n'."""
    return thought_words[0] + thought_words[1]


def has_thought(content: str, thought_words: tuple[str, str]) -> bool:
    """Whether an answer already opens or closes a block (LLaMA-Factory tests the stripped words)."""
    return thought_words[0].strip() in content or thought_words[1].strip() in content


def remove_thought(content: str, thought_words: tuple[str, str]) -> str:
    """The answer without its reasoning blocks, leading newlines dropped (LLaMA-Factory's remove_thought)."""
    pattern = re.compile(f"{re.escape(thought_words[0])}(.*?){re.escape(thought_words[1])}", re.DOTALL)
    return pattern.sub("", content).lstrip("\n")


def segments_with_thoughts(template, tokenizer, conv: Conversation, render) -> list[str]:
    """`render(tokenizer, conv)`'s per-message segments with the thinking blocks placed as described above.

    The block is added to the segments (text before the answer's slot, or after the prompt's), as
    LLaMA-Factory adds its ids before the response's or after the prompt's, so each stays on its side of
    the prompt/response boundary.
    """
    words = template.thought_words
    generation = len(conv.messages) % 2 == 1  # ends with a prompt: the history generation is asked to answer
    strip = generation or not template.enable_thinking
    messages = [
        replace(m, content=remove_thought(m.content, words)) if strip and m.role in RESPONSE_ROLES else m
        for m in conv.messages
    ]
    segments = render(tokenizer, replace(conv, messages=messages))
    block = empty_thought(words)
    if generation:
        if not template.enable_thinking:
            segments[-1] += block
        return segments
    for i in range(1, len(messages), 2):
        if has_thought(messages[i].content, words):
            continue
        if template.enable_thinking:
            segments[i] = block + segments[i]  # trained on: the model learns to open and close the block
        else:
            segments[i - 1] += block  # part of the prompt, as the generation prompt ends with it
    return segments
