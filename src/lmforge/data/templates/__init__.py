"""Chat templates: how a Conversation becomes token ids, turn by turn.

Example:
    from lmforge.data.templates import get_template

    template = get_template("qwen", tokenizer)        # or "auto": the tokenizer's own chat_template
    for prompt_ids, response_ids in template.encode_turns(tokenizer, conversation):
        ...                                            # response_ids end with the end-of-turn tokens
    prompt = template.encode_prompt(tokenizer, conversation_ending_with_user)
    model.generate(..., eos_token_id=template.stop_token_ids(tokenizer))

Named templates are rows of a table (builtin.py); `auto` renders the tokenizer's chat_template (hf_chat.py).
Both expose: name, default_system, efficient_eos, encode_turns, encode_prompt, stop_token_ids.
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.data.templates.builtin import TEMPLATES
from lmforge.data.templates.hf_chat import HfChatTemplate
from lmforge.data.templates.template import Template
from lmforge.logging import get_logger

logger = get_logger(__name__)

AUTO = "auto"


def get_template(name: str, tokenizer, enable_thinking: bool = True) -> Template | HfChatTemplate:
    """The template called `name` (or `auto`), checked against the tokenizer it will encode with.

    `enable_thinking` (the config key) is given to reasoning rows (qwen3, deepseekr1; see reasoning.py); other
    rows and `auto` (which renders the tokenizer's own template as is) ignore it.

    Raises:
        ConfigError: (key 'template') the name is unknown, or the tokenizer lacks a token the template needs,
            or `auto` is asked of a tokenizer without a usable chat_template.
    """
    if name == AUTO:
        return HfChatTemplate(tokenizer)
    template = TEMPLATES.get(name)
    template.check_tokenizer(tokenizer)
    if template.thought_words is not None:
        template = replace(template, enable_thinking=enable_thinking)
    return template


def resolve_template(name: str | None, tokenizer, enable_thinking: bool = True) -> Template | HfChatTemplate:
    """The template named by the config; by default the tokenizer's own chat_template, else `empty`."""
    if name is None:
        name = AUTO if getattr(tokenizer, "chat_template", None) else "empty"
        logger.info("template not set: using '%s'", name)
    return get_template(name, tokenizer, enable_thinking)


__all__ = ["AUTO", "TEMPLATES", "HfChatTemplate", "Template", "get_template", "resolve_template"]
