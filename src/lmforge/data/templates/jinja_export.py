"""A named template as a Hugging Face Jinja chat template, so an exported model renders as lmforge does.

    from lmforge.data.templates.jinja_export import to_jinja

    tokenizer.chat_template = to_jinja(TEMPLATES.get("qwen"))
    tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # == what template.encode_prompt(tokenizer, conversation) decodes to

The Jinja follows `Template.render_segments` slot by slot (LLaMA-Factory's `_get_jinja_template` does the
same for its rows; this one also covers system_in_user rows, observation turns and the empty system case):
the system prompt is a leading `system` message, else the row's `default_system` (or the one given here);
the system slot appears only when that text is non-empty; the prefix opens the text once; `user`,
`assistant` and `tool` messages fill the user, assistant and observation slots. `{{bos}}` / `{{eos}}`
become the `bos_token` / `eos_token` variables `apply_chat_template` passes in.

Reasoning rows (`thought_words`, e.g. qwen3, deepseekr1) place thinking blocks as reasoning.py does: a
conversation ending with an assistant message is rendered as training sees it, one ending with a user
message as generation does (earlier answers without their thoughts); with `enable_thinking` false the
generation prompt ends with the empty block, with it true it does not. The setting given here is written
in as the default; `apply_chat_template(..., enable_thinking=...)` (Qwen3's keyword) overrides it.

Differences from a model's own chat template, on purpose: a row's user slot ends with the assistant
header, so a conversation ending in a user message ends with that header whether or not
`add_generation_prompt` is set (as in LLaMA-Factory's export). `add_generation_prompt` matters only for
thinking rows, where it adds what the generation prompt carries after the header.

Tools are not exported: tool schemas and tool calls are written by per-format Python code (tools.py) that
has no Jinja counterpart here. The template raises (`raise_exception`, which transformers turns into a
TemplateError) when given `tools`, an assistant message with `tool_calls`, a `function` message or content
that is not text, rather than render something lmforge would not. Tool results (`tool` / `observation`
messages) are plain text in the observation slot and are rendered.
"""

from __future__ import annotations

from lmforge.data.templates.template import BOS, CONTENT, EOS, Template

_TOOLS_REFUSED = "tools and tool calls are not part of the chat template exported by lmforge"


def to_jinja(template: Template, enable_thinking: bool | None = None, default_system: str | None = None) -> str:
    """The Jinja chat template that renders what `template` renders for the same messages.

    Args:
        template: A named row (`TEMPLATES.get(name)`); `auto` has no row, its tokenizer keeps its own template.
        enable_thinking: The run's thinking setting, for rows with thinking blocks (None: the row's own
            `enable_thinking`). Written in as the default; an `enable_thinking` passed to
            `apply_chat_template` (Qwen3's convention) overrides it.
        default_system: System prompt used when the messages have none, instead of the row's `default_system`
            (the run's `default_system`, which training gave every sample without one).
    """
    system = template.default_system if default_system is None else default_system
    words = getattr(template, "thought_words", None)
    if enable_thinking is None:
        enable_thinking = getattr(template, "enable_thinking", True)
    parts = [
        f"{{#- lmforge template '{_comment(template.name)}': tools are not supported -#}}",
        "{%- if tools -%}" + _raise(_TOOLS_REFUSED) + "{%- endif -%}",
        *(_thinking_setup(words, enable_thinking) if words else []),
        "{%- set system = " + _literal(system) + " -%}",
        "{%- set loop_messages = messages -%}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- if messages[0]['content'] -%}{%- set system = messages[0]['content'] -%}{%- endif -%}",
        "{%- set loop_messages = messages[1:] -%}",
        "{%- endif -%}",
        # lmforge's system slot appears only when there is a system prompt (as in LLaMA-Factory).
        "{%- set system_text = (" + _expr(template.system, "system") + ") if system else '' -%}",
        # A conversation ending with a prompt is rendered as generation sees it (reasoning.py).
        "{%- set generation = loop_messages | length % 2 == 1 -%}" if words else "",
        "{%- for message in loop_messages -%}",
        "{%- set role = message['role'] -%}",
        "{%- if role == 'function' or message['tool_calls'] is defined and message['tool_calls'] -%}"
        + _raise(_TOOLS_REFUSED) + "{%- endif -%}",
        "{%- if role not in ['user', 'assistant', 'tool', 'observation'] -%}"
        + _raise("roles after the first message must be user, assistant or tool") + "{%- endif -%}",
        # lmforge's conversations alternate prompt (user / tool result) and response turns from a prompt.
        "{%- if (role != 'assistant') != (loop.index0 % 2 == 0) -%}"
        + _raise("messages must alternate user/tool and assistant, starting with user") + "{%- endif -%}",
        "{%- if message['content'] is not string -%}" + _raise("message content must be text") + "{%- endif -%}",
        "{%- set content = message['content'] -%}",
        "{%- if loop.first -%}",
        "{{- " + _expr(template.prefix, None) + " -}}" if template.prefix else "",
        # system_in_user rows (Llama 2, Mistral, Gemma) fuse the system text into the first message's content.
        "{%- set content = system_text ~ content -%}" if template.system_in_user else "{{- system_text -}}",
        "{%- endif -%}",
        "{%- if role == 'user' -%}{{- " + _expr(template.user, "content") + " -}}",
        "{%- elif role == 'assistant' -%}",
        *(_thinking_answer(words) if words else []),
        "{{- " + _expr(template.assistant, "content") + " -}}",
        "{%- else -%}{{- " + _expr(template.observation or template.user, "content") + " -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        # Generation with thinking off: the prompt ends with the empty block (Qwen3's enable_thinking=False).
        "{%- if generation and add_generation_prompt is defined and add_generation_prompt and not thinking -%}"
        "{{- " + _literal(words[0] + words[1]) + " -}}{%- endif -%}" if words else "",
    ]
    return "\n".join(part for part in parts if part)


def _thinking_setup(words: tuple[str, str], enable_thinking: bool) -> list[str]:
    """The thinking setting and reasoning.py's `remove_thought` as a macro (Jinja has no regular expressions:
    the first opening word, then the first closing word after it, is cut out until none is left, which is
    what the non-greedy `re.sub` does)."""
    opening, closing = words
    return [
        "{%- set thinking = enable_thinking if enable_thinking is defined and enable_thinking is not none else "
        + ("true" if enable_thinking else "false") + " -%}",
        "{%- macro remove_thought(text) -%}",
        "{%- set ns = namespace(out='', rest=text) -%}",
        "{%- for _ in range(text.count(" + _literal(opening) + ")) -%}",
        "{%- set i = ns.rest.find(" + _literal(opening) + ") -%}",
        "{%- set j = ns.rest.find(" + _literal(closing) + ", i + " + str(len(opening)) + ") if i >= 0 else -1 -%}",
        "{%- if j >= 0 -%}{%- set ns.out = ns.out ~ ns.rest[:i] -%}"
        "{%- set ns.rest = ns.rest[j + " + str(len(closing)) + ":] -%}{%- endif -%}",
        "{%- endfor -%}",
        "{{- (ns.out ~ ns.rest).lstrip('\\n') -}}",
        "{%- endmacro -%}",
    ]


def _thinking_answer(words: tuple[str, str]) -> list[str]:
    """reasoning.py for one answer: thoughts removed in generation's history and with thinking off; in
    training, an answer without a block gets the empty one before it (the same text whether the block ends
    the prompt, thinking off, or opens the answer, thinking on)."""
    has_thought = f"({_literal(words[0].strip())} in content or {_literal(words[1].strip())} in content)"
    return [
        "{%- if generation or not thinking -%}{%- set content = remove_thought(content) -%}{%- endif -%}",
        "{%- if not generation and not " + has_thought + " -%}{{- " + _literal(words[0] + words[1])
        + " -}}{%- endif -%}",
    ]


def _expr(slot: str, variable: str | None) -> str:
    """A Jinja expression for a slot: literal pieces, bos/eos variables and `variable` at `{{content}}`."""
    pieces: list[str] = []
    before, marker, after = slot.partition(CONTENT)
    for i, text in enumerate((before, after)):
        if i == 1 and marker and variable is not None:
            pieces.append(variable)
        for j, chunk in enumerate(_split_markers(text)):
            if j % 2:
                pieces.append("(bos_token or '')" if chunk == BOS else "(eos_token or '')")
            elif chunk:
                pieces.append(_literal(chunk))
    return " ~ ".join(pieces) or "''"


def _split_markers(text: str) -> list[str]:
    """text -> [literal, marker, literal, marker, ...] for the {{bos}} / {{eos}} markers, in order."""
    out: list[str] = []
    rest = text
    while True:
        at = [(rest.find(m), m) for m in (BOS, EOS) if m in rest]
        if not at:
            return [*out, rest]
        index, marker = min(at)
        out += [rest[:index], marker]
        rest = rest[index + len(marker) :]


def _literal(text: str) -> str:
    """A single-quoted Jinja string literal for `text` (Jinja reads literals with Python's escapes)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return "'" + escaped.replace("\t", "\\t") + "'"


def _raise(message: str) -> str:
    return "{{- raise_exception(" + _literal(message) + ") -}}"


def _comment(text: str) -> str:
    return text.replace("#}", "# }")
