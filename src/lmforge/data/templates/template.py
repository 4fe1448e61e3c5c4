"""A chat template as data: text slots with markers, rendered into token ids one turn at a time.

A `Template` is one row of the table in `builtin.py`. Each slot is a plain string in which `{{content}}`
marks the message text and `{{bos}}` / `{{eos}}` the tokenizer's bos / eos token; special tokens such as
`<|im_start|>` are written literally (the tokenizer keeps them whole). The slots follow LLaMA-Factory's
split of a conversation, so its two-turn pairs come out the same:

    turn 1 prompt   = prefix + system + user slot      (the user slot ends with the assistant header)
    turn 1 response = assistant slot                    (content + end-of-turn tokens, the stop signal)
    turn t prompt   = user (or observation) slot
    turn t response = assistant (or function) slot

Example:
    template = Template(name="mine", user="<u>{{content}}</u><a>", assistant="{{content}}{{eos}}")
    pairs = template.encode_turns(tokenizer, conversation)   # [(prompt_ids, response_ids), ...]

Token ids are made one message at a time (`encode_segments`), as LLaMA-Factory encodes each message on its own:
training puts before each answer exactly the ids `encode_prompt` sends the model for the same history, and
the answer is its own text tokenized from its start. Tokenizing the whole text at once (what
`apply_chat_template` does) would let a BPE merge span the boundary (e.g. 'Assistant:' + '**Yes**' ->
'Assistant', ':**', ...): the merged token would be trained as answer, yet generation, whose prompt ends
with ':', never sees it. Where no token spans a boundary, the ids equal the whole text's ids, so templates
whose boundaries are special tokens give `apply_chat_template`'s ids token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.templates.reasoning import segments_with_thoughts
from lmforge.data.templates.tools import format_function_call, format_tools
from lmforge.errors import ConfigError, DataError
from lmforge.types import PROMPT_ROLES, RESPONSE_ROLES, Conversation, Role

CONTENT = "{{content}}"
BOS = "{{bos}}"
EOS = "{{eos}}"


@dataclass(frozen=True)
class Template:
    """One named chat format. Every field is data; the encoding code below is shared by all templates."""

    name: str
    user: str
    """Prompt turn: the user's text and the header that opens the assistant's answer."""
    assistant: str
    """Response turn: the answer and the tokens that end it (they are trained on, so the model learns to stop)."""
    system: str = CONTENT
    """Wraps the system prompt (with any tool text appended)."""
    observation: str | None = None
    """Prompt turn holding a tool's result; the user slot when None."""
    function: str | None = None
    """Response turn holding a tool call; the assistant slot when None."""
    prefix: str = ""
    """Text before everything else, once (usually `{{bos}}`)."""
    default_system: str = ""
    """System prompt used when a conversation has none (LLaMA-Factory's `default_system`)."""
    system_in_user: bool = False
    """Fuse the wrapped system text into the first prompt turn's content (Llama 2, Mistral, Gemma)."""
    stop_words: tuple[str, ...] = ()
    """Tokens besides eos that end a generated turn."""
    special_tokens: tuple[str, ...] = ()
    """Tokens the slots need the tokenizer to keep whole; a tokenizer lacking one is refused up front."""
    efficient_eos: bool = False
    """LLaMA-Factory's efficient_eos: responses carry no eos; the processor labels the first token of the
    next prompt as eos and appends one eos to the whole sample."""
    tool_format: str = "default"
    """How tool schemas and calls are written (see tools.py)."""
    thought_words: tuple[str, str] | None = None
    """Opening and closing text of a reasoning block (LLaMA-Factory's thought_words, e.g. ('<think>\\n',
    '\\n</think>\\n\\n')); set on reasoning templates only (qwen3, deepseekr1), None elsewhere. See reasoning.py."""
    enable_thinking: bool = True
    """Reasoning templates only: the run's `enable_thinking` (get_template sets it). True: an answer without a
    block gets the empty block prepended (trained on); False: thoughts are removed from answers and the empty
    block ends the prompt (not trained on), also the generation prompt, as Qwen3's enable_thinking=False does."""

    def __post_init__(self) -> None:
        for field_name in ("user", "assistant", "system", "observation", "function"):
            slot = getattr(self, field_name)
            if slot is not None and slot.count(CONTENT) != 1:
                raise ValueError(f"template '{self.name}': slot '{field_name}' needs exactly one {CONTENT}")
        if self.efficient_eos and EOS in self.assistant:
            raise ValueError(f"template '{self.name}': efficient_eos templates end responses without {EOS}")
        if self.thought_words is not None and len(self.thought_words) != 2:
            raise ValueError(f"template '{self.name}': thought_words is (opening, closing)")

    # ---- the interface the processors and the inference engine use ----------------------------------------

    def encode_turns(self, tokenizer, conv: Conversation) -> list[tuple[list[int], list[int]]]:
        """One (prompt_ids, response_ids) pair per response turn; their concatenation encodes the full render."""
        return turn_pairs(tokenizer, conv, self.render_segments)

    def encode_prompt(self, tokenizer, conv: Conversation) -> list[int]:
        """Ids of a conversation ending in a prompt turn, up to and including the assistant header: the ids
        `encode_turns` puts before the answer to that same history."""
        return prompt_ids(tokenizer, conv, self.render_segments)

    def stop_token_ids(self, tokenizer) -> list[int]:
        """eos and the template's stop words that the tokenizer holds as single tokens, in that order."""
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for word in self.stop_words:
            token_id = single_token_id(tokenizer, word)
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
        return ids

    def check_tokenizer(self, tokenizer) -> None:
        """Raise ConfigError when the tokenizer cannot serve this template (missing tokens)."""
        slots = (self.prefix, self.user, self.assistant, self.system, self.observation or "", self.function or "")
        missing = [tok for tok in self.special_tokens if single_token_id(tokenizer, tok) is None]
        if missing:
            raise ConfigError(
                f"template '{self.name}' needs {', '.join(map(repr, missing))} as single tokens, but the tokenizer "
                f"splits them; set 'template' to the one the model was trained with (or 'auto' to use the "
                f"tokenizer's own chat_template), or add them as special tokens and resize the embeddings"
            )
        for marker, attr in ((BOS, "bos_token"), (EOS, "eos_token")):
            if any(marker in slot for slot in slots) and getattr(tokenizer, attr, None) is None:
                raise ConfigError(
                    f"template '{self.name}' needs a {attr} but the tokenizer has none; set 'template' to one "
                    f"matching the model, or give the tokenizer a {attr}"
                )
        if self.efficient_eos and tokenizer.eos_token_id is None:
            raise ConfigError(f"template '{self.name}' (efficient_eos) needs an eos_token; the tokenizer has none")

    # ---- rendering -----------------------------------------------------------------------------------------

    def render_segments(self, tokenizer, conv: Conversation) -> list[str]:
        """The rendered text of each message, in order; the first also holds the prefix and system prompt.

        Reasoning templates (`thought_words` set) place their thinking blocks as reasoning.py describes: a
        conversation ending with a response is rendered as training sees it, one ending with a prompt as
        generation does.
        """
        if self.thought_words is not None:
            return segments_with_thoughts(self, tokenizer, conv, self._render)
        return self._render(tokenizer, conv)

    def _render(self, tokenizer, conv: Conversation) -> list[str]:
        system = conv.system or self.default_system
        tool_text = format_tools(conv.tools, self.tool_format) if conv.tools else ""
        # As in LLaMA-Factory, the system slot appears only when there is a system prompt or tools.
        system_text = self._fill(self.system, system + tool_text, tokenizer) if system or tool_text else ""
        segments = []
        for i, message in enumerate(conv.messages):
            content = message.content
            if message.role == Role.FUNCTION:
                content = format_function_call(content, self.tool_format)
            head = ""
            if i == 0:
                head = self._fill(self.prefix, "", tokenizer)
                if self.system_in_user:
                    content = system_text + content
                else:
                    head += system_text
            segments.append(head + self._fill(self._slot(message.role), content, tokenizer))
        return segments

    def _slot(self, role: Role) -> str:
        if role == Role.USER:
            return self.user
        if role == Role.ASSISTANT:
            return self.assistant
        if role == Role.OBSERVATION:
            return self.observation or self.user
        if role == Role.FUNCTION:
            return self.function or self.assistant
        raise DataError(f"role '{role}' cannot appear among a conversation's messages (system goes in 'system')")

    @staticmethod
    def _fill(slot: str, content: str, tokenizer) -> str:
        # Markers are replaced in the slot before the content goes in, so message text that happens to contain
        # '{{eos}}' stays literal text.
        slot = slot.replace(BOS, tokenizer.bos_token or "").replace(EOS, tokenizer.eos_token or "")
        before, marker, after = slot.partition(CONTENT)
        return before + content + after if marker else slot


def check_roles(conv: Conversation, ends_with_response: bool) -> None:
    """Raise DataError unless messages alternate prompt/response from a prompt, ending as asked."""
    roles = [m.role for m in conv.messages]
    alternates = all((role in PROMPT_ROLES) if i % 2 == 0 else (role in RESPONSE_ROLES) for i, role in enumerate(roles))
    if not roles or not alternates or (len(roles) % 2 == 0) != ends_with_response:
        want = "a response (assistant/function)" if ends_with_response else "a prompt (user/observation)"
        raise DataError(
            "a conversation must alternate prompt (user/observation) and response (assistant/function) turns, "
            f"start with a prompt and end with {want}; got roles {[str(r) for r in roles]}"
        )


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as `apply_chat_template` makes them: special tokens come from the text itself."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def turn_pairs(tokenizer, conv: Conversation, render_segments) -> list[tuple[list[int], list[int]]]:
    """(prompt_ids, response_ids) per response turn from a template's per-message text segments."""
    check_roles(conv, ends_with_response=True)
    ids = encode_segments(tokenizer, render_segments(tokenizer, conv))
    return [(ids[i], ids[i + 1]) for i in range(0, len(ids), 2)]


def prompt_ids(tokenizer, conv: Conversation, render_segments) -> list[int]:
    """Ids of a conversation ending in a prompt turn, segment by segment as `turn_pairs` encodes them."""
    check_roles(conv, ends_with_response=False)
    return [tok for ids in encode_segments(tokenizer, render_segments(tokenizer, conv)) for tok in ids]


def encode_segments(tokenizer, segments: list[str]) -> list[list[int]]:
    """Token ids of each segment (one rendered message), so that no token spans two segments.

    Generation encodes a history the same way, so the ids training puts before an answer are the ids the
    model is prompted with, and the answer's ids are its own text tokenized from its start (as
    LLaMA-Factory encodes each message on its own). A segment is read as the continuation of the one before:
    when the two tokenized together start with the earlier one's ids, it gets the ids after them, which is
    the whole text's tokenization (so nothing changes where no merge happens, and a sentencepiece tokenizer
    adds no dummy prefix mid-text: '[/INST]' + ' Paris' keeps '▁Paris'). When a token would span the
    boundary (a BPE merge such as ':' + '**' -> ':**', or '\n' + '\n' -> '\n\n'), the segment is tokenized
    alone instead. The ids then differ from `apply_chat_template`'s, on purpose: that tokenization would
    train the merged token as the answer's first, which generation, prompted with the text up to ':', can
    never produce.
    """
    if not segments:
        return []
    alone = tokenizer(segments, add_special_tokens=False)["input_ids"]
    if len(segments) == 1:
        return alone
    pairs = tokenizer([a + b for a, b in zip(segments, segments[1:])], add_special_tokens=False)["input_ids"]
    ids = [alone[0]]
    for i, joined in enumerate(pairs, start=1):
        head = alone[i - 1]
        ids.append(joined[len(head) :] if joined[: len(head)] == head else alone[i])
    return ids


def single_token_id(tokenizer, token: str) -> int | None:
    """The id of `token` if the tokenizer encodes it as exactly one (known) token, else None."""
    ids = encode_text(tokenizer, token)
    if len(ids) != 1 or (tokenizer.unk_token_id is not None and ids[0] == tokenizer.unk_token_id):
        return None
    return ids[0]
