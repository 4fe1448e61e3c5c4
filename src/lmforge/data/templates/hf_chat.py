"""`template: auto`: the tokenizer's own Jinja chat_template, split into prompt and response turns.

`apply_chat_template` only renders whole conversations, but training needs to know which tokens are the
assistant's. So the conversation is rendered once per message, each time one message longer: a prefix
ending in a prompt turn is rendered with `add_generation_prompt=True` (it ends with the assistant header),
one ending in a response without it. Each render must extend the previous one; the difference is that
message's segment. Templates that rewrite earlier turns once later ones follow (Qwen3's thinking template
drops old <think> blocks, Phi-3.5 appends eos after the last turn) are not prefix-stable and are refused
with a ConfigError, since no split of their text is faithful.

The segments are encoded one by one, as for a named template (`encode_segments` in template.py), and so is
the generation prompt: where a chat template ends its generation prompt with plain text (a newline, or
'Assistant:') and an answer would merge into it, the ids differ from `apply_chat_template(tokenize=True)`
on purpose, so that training puts before each answer the ids generation sends.

Example:
    template = HfChatTemplate(tokenizer)          # what get_template("auto", tokenizer) returns
    pairs = template.encode_turns(tokenizer, conv)

Messages are passed as {role, content}: FUNCTION as an assistant message with its content as text,
OBSERVATION as role 'tool', and `conv.tools` (JSON) as the `tools` argument.
"""

from __future__ import annotations

import json

from lmforge.data.templates.template import (
    encode_text,
    prompt_ids,
    single_token_id,
    turn_pairs,
)
from lmforge.errors import ConfigError, DataError
from lmforge.types import PROMPT_ROLES, Conversation, Message, Role

_ROLE_NAMES = {Role.USER: "user", Role.ASSISTANT: "assistant", Role.FUNCTION: "assistant", Role.OBSERVATION: "tool"}

# Rendered once at construction: proves the template is prefix-stable and shows which token ends a turn.
_PROBE = Conversation(
    [
        Message(Role.USER, "Hi there"),
        Message(Role.ASSISTANT, "Hello friend"),
        Message(Role.USER, "Once more"),
        Message(Role.ASSISTANT, "Goodbye now"),
    ]
)


class HfChatTemplate:
    """The tokenizer's chat_template behind the same interface as a named `Template`.

    Holds only strings (no tokenizer), so it pickles into `datasets.map` workers.
    """

    name = "auto"
    efficient_eos = False
    default_system = ""
    """Empty: when a conversation has no system prompt, the chat_template's own default (if any) applies."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "template 'auto' uses the tokenizer's chat_template, but this tokenizer has none; set 'template' to "
                "a named template (e.g. qwen, llama3, chatml, or empty for base models)"
            )
        probe = self.render_segments(tokenizer, _PROBE)
        # The special token that closes an assistant turn (e.g. '<|im_end|>'), or None; generation stops on it.
        self.end_of_turn = _end_of_turn(tokenizer, probe[1], _PROBE.messages[1].content)

    def encode_turns(self, tokenizer, conv: Conversation) -> list[tuple[list[int], list[int]]]:
        """One (prompt_ids, response_ids) pair per response turn; their concatenation encodes the full render."""
        return turn_pairs(tokenizer, conv, self.render_segments)

    def encode_prompt(self, tokenizer, conv: Conversation) -> list[int]:
        """Ids of a conversation ending in a prompt turn, with the generation prompt: the ids `encode_turns`
        puts before the answer to that same history."""
        return prompt_ids(tokenizer, conv, self.render_segments)

    def stop_token_ids(self, tokenizer) -> list[int]:
        """eos and the token the chat_template closes assistant turns with."""
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        if self.end_of_turn is not None:
            token_id = single_token_id(tokenizer, self.end_of_turn)
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
        return ids

    def render_segments(self, tokenizer, conv: Conversation) -> list[str]:
        """The text each message adds to the render, in order (the first also holds everything before it)."""
        segments: list[str] = []
        done = ""
        for count, message in enumerate(conv.messages, start=1):
            text = self._render(tokenizer, conv, count, add_generation_prompt=message.role in PROMPT_ROLES)
            if not text.startswith(done):
                at = next((i for i, (a, b) in enumerate(zip(done, text)) if a != b), len(text))
                raise ConfigError(
                    "template 'auto': the tokenizer's chat_template is not prefix-stable (it renders earlier turns "
                    f"differently once message {count} is added: {done[at : at + 40]!r} became {text[at : at + 40]!r}), "
                    "so prompt and response tokens cannot be told apart; set 'template' to a named template instead"
                )
            segments.append(text[len(done) :])
            done = text
        return segments

    @staticmethod
    def _render(tokenizer, conv: Conversation, count: int, add_generation_prompt: bool) -> str:
        """Render the system prompt and the first `count` messages."""
        from jinja2 import (
            TemplateError,  # transformers renders chat templates with jinja2
        )

        messages = [{"role": "system", "content": conv.system}] if conv.system else []
        messages += [{"role": _ROLE_NAMES[m.role], "content": m.content} for m in conv.messages[:count]]
        tools = _load_tools(conv.tools) if conv.tools else None
        try:
            return tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except TemplateError as err:
            raise ConfigError(
                f"template 'auto': the tokenizer's chat_template refused a conversation ({err}); fix the data "
                "(e.g. drop system prompts it does not support) or set 'template' to a named template"
            ) from None


def _end_of_turn(tokenizer, response_text: str, content: str) -> str | None:
    """The first token after the content in a rendered response, if it is an added (special) token."""
    tail = response_text[response_text.rfind(content) + len(content) :] if content in response_text else ""
    ids = encode_text(tokenizer, tail)
    if not ids or ids[0] not in tokenizer.added_tokens_decoder:
        return None
    return tokenizer.convert_ids_to_tokens(ids[0])


def _load_tools(tools_json: str):
    try:
        return json.loads(tools_json)
    except json.JSONDecodeError as err:
        raise DataError(f"tools is not valid JSON ({err}): {tools_json[:200]!r}") from None
