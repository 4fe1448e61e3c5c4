"""Exported Jinja chat templates against lmforge's own rendering, for every registered template.

`apply_chat_template(messages, chat_template=to_jinja(row))` must give exactly the text of
`row.render_segments` (conversations ending in a response) and, with `add_generation_prompt=True`, the text
`row.encode_prompt` decodes to (conversations ending in a prompt), on a tokenizer trained on the spot with
the bos / eos the real model has. The registry is iterated, so rows added later are covered.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from jinja2 import TemplateError

from lmforge.data.templates import TEMPLATES, Template
from lmforge.data.templates.jinja_export import to_jinja
from lmforge.model.new_tokenizer import build_tokenizer
from lmforge.model.special_tokens import ALL_CHAT_TOKENS
from lmforge.types import Conversation, Message, Role

# bos / eos like the real model's tokenizer where it matters; any other row gets Llama-2-like ones.
BOS_EOS = {
    "qwen": (None, "<|endoftext|>"),
    "qwen3_nothink": (None, "<|im_end|>"),
    "chatml": (None, "<|endoftext|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma": ("<bos>", "<eos>"),
    "phi": (None, "<|endoftext|>"),
    "default": (None, "<|endoftext|>"),
}
TRICKY = "It's a \\back\\slash, {{eos}} {% raw %} {# x #}\n\ttab, 'quotes' \"too\" and ünïcode 🙂"

U, A, O = Role.USER, Role.ASSISTANT, Role.OBSERVATION
# (id, system, roles and texts): every shape lmforge renders, ending in a response or in a prompt.
CONVERSATIONS = {
    "one-turn": ("", [(U, "What is the capital of France?"), (A, "Paris.")]),
    "system": ("You are a terse tutor.", [(U, "Capital of Italy?"), (A, "Rome.")]),
    "multi-turn": ("Be brief.", [(U, "Hi"), (A, "Hello!"), (U, "And again?\nTwo lines."), (A, "Hello again.")]),
    "tool-result": ("", [(U, "Add 2 and 3"), (A, "Calling add."), (O, "5"), (A, "It is 5.")]),
    "tricky": (TRICKY, [(U, TRICKY), (A, TRICKY)]),
    "thoughts": ("", [(U, "Capital of France?"), (A, "<think>\nIt is Paris.\n</think>\n\nParis."),
                      (U, "And Italy?"), (A, "\n\nRome.")]),
    "odd-thoughts": ("", [(U, "Hm"), (A, "<think>\na\n</think>\n\nb<think>\nc\n</think>\n\nd"), (U, "Hm?"),
                          (A, "only </think> closes"), (U, "Hm!"), (A, "<think>\nunclosed")]),
    "prompt": ("", [(U, "What is 2+2?")]),
    "prompt-system": ("Answer in words.", [(U, "What is 2+2?")]),
    "prompt-multi-turn": ("Be brief.", [(U, "Hi"), (A, "Hello!"), (U, "Bye?")]),
    "prompt-after-thoughts": ("", [(U, "Capital of France?"), (A, "<think>\nIt is Paris.\n</think>\n\nParis."),
                                   (U, "And Italy?")]),
    "prompt-after-odd-thoughts": ("", [(U, "Hm"), (A, "<think>\na\n</think>\n\nb<think>\nc\n</think>\nd"),
                                       (U, "Hm?"), (A, "only </think> closes <think>\nx"), (U, "Hm!")]),
}
HAS_THOUGHT_WORDS = "thought_words" in Template.__dataclass_fields__


def rows() -> list[tuple[str, bool | None]]:
    """(name, enable_thinking) for every registered row: reasoning rows both ways, others once (None)."""
    out = []
    for name in TEMPLATES:
        thinking = getattr(TEMPLATES.get(name), "thought_words", None) is not None
        out += [(name, True), (name, False)] if thinking else [(name, None)]
    return out


def row_for(name: str, enable_thinking: bool | None):
    row = TEMPLATES.get(name)
    return row if enable_thinking is None else replace(row, enable_thinking=enable_thinking)


def make_tokenizer(name: str):
    bos, eos = BOS_EOS.get(name, ("<s>", "</s>"))
    return build_tokenizer(special_tokens=ALL_CHAT_TOKENS, bos_token=bos, eos_token=eos)


def conversation(key: str) -> Conversation:
    system, turns = CONVERSATIONS[key]
    return Conversation([Message(role, text) for role, text in turns], system=system)


def hf_messages(conv: Conversation, system_message: bool = True) -> list[dict]:
    roles = {U: "user", A: "assistant", O: "tool"}
    messages = [{"role": "system", "content": conv.system}] if system_message and conv.system else []
    return messages + [{"role": roles[m.role], "content": m.content} for m in conv.messages]


def render(tokenizer, template_text: str, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template_text, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


@pytest.fixture(scope="module")
def tokenizers():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = make_tokenizer(name)
        return cache[name]

    return get


@pytest.mark.parametrize("key", list(CONVERSATIONS))
@pytest.mark.parametrize(("name", "enable_thinking"), rows())
def test_exported_template_renders_what_lmforge_renders(name, enable_thinking, key, tokenizers):
    tokenizer = tokenizers(name)
    row = row_for(name, enable_thinking)
    conv = conversation(key)
    if conv.messages[-1].role == A:
        # A whole conversation: the text training encodes (no generation prompt after a response).
        expected = "".join(row.render_segments(tokenizer, conv))
        assert render(tokenizer, to_jinja(row), hf_messages(conv), add_generation_prompt=False) == expected
    else:
        # A history ending in a prompt: the text generation sends, with the generation prompt.
        expected = tokenizer.decode(row.encode_prompt(tokenizer, conv))
        assert expected == "".join(row.render_segments(tokenizer, conv))  # decoding loses nothing here
        assert render(tokenizer, to_jinja(row), hf_messages(conv), add_generation_prompt=True) == expected


@pytest.mark.parametrize(("name", "enable_thinking"), rows())
def test_apply_chat_template_enable_thinking_overrides_the_written_setting(name, enable_thinking, tokenizers):
    """Qwen3's convention: `apply_chat_template(..., enable_thinking=...)` picks the mode at render time."""
    tokenizer = tokenizers(name)
    written = to_jinja(row_for(name, enable_thinking), enable_thinking=not enable_thinking)
    for key in ("thoughts", "prompt-after-thoughts"):
        conv = conversation(key)
        ends_with_prompt = conv.messages[-1].role != A
        expected = "".join(row_for(name, enable_thinking).render_segments(tokenizer, conv))
        text = tokenizer.apply_chat_template(hf_messages(conv), chat_template=written, tokenize=False,
                                             add_generation_prompt=ends_with_prompt, enable_thinking=enable_thinking)
        assert text == expected


@pytest.mark.skipif(not HAS_THOUGHT_WORDS, reason="templates have no thought_words yet")
@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("key", list(CONVERSATIONS))
def test_reasoning_row_places_thinking_blocks_as_lmforge(key, enable_thinking):
    """A ChatML row with Qwen3's thought words, whether or not such a row is registered."""
    row = replace(TEMPLATES.get("qwen3_nothink"), name="think", thought_words=("<think>\n", "\n</think>\n\n"),
                  enable_thinking=enable_thinking)
    tokenizer = make_tokenizer("qwen3_nothink")
    conv = conversation(key)
    ends_with_prompt = conv.messages[-1].role != A
    expected = "".join(row.render_segments(tokenizer, conv))
    if ends_with_prompt:
        assert expected == tokenizer.decode(row.encode_prompt(tokenizer, conv))
        assert expected.endswith("<|im_start|>assistant\n" + ("" if enable_thinking else "<think>\n\n</think>\n\n"))
    text = render(tokenizer, to_jinja(row), hf_messages(conv), add_generation_prompt=ends_with_prompt)
    assert text == expected
    if key == "thoughts":
        assert ("It is Paris." in text) == enable_thinking  # thoughts trained on only with thinking on
        # thinking on: the answer without a block gets the empty one; off: every answer, its thoughts removed
        assert text.count("<think>\n\n</think>\n\n") == (1 if enable_thinking else 2)


@pytest.mark.parametrize(("name", "enable_thinking"), rows())
def test_default_system_fills_a_missing_or_empty_system_message(name, enable_thinking, tokenizers):
    tokenizer = tokenizers(name)
    row = row_for(name, enable_thinking)
    conv = conversation("one-turn")
    expected = "".join(row.render_segments(tokenizer, conv))  # the row's default_system (or none)
    empty_system = [{"role": "system", "content": ""}, *hf_messages(conv)]
    assert render(tokenizer, to_jinja(row), empty_system, add_generation_prompt=False) == expected

    # A run's default_system replaces the row's, as training gave it to samples without one.
    with_default = Conversation(conv.messages, system="Run default.")
    expected = "".join(row.render_segments(tokenizer, with_default))
    text = to_jinja(row, default_system="Run default.")
    assert render(tokenizer, text, hf_messages(conv), add_generation_prompt=False) == expected
    assert "Run default." in expected


def test_qwen_default_system_is_written_and_special_characters_survive():
    tokenizer = make_tokenizer("qwen")
    text = render(tokenizer, to_jinja(TEMPLATES.get("qwen")), [{"role": "user", "content": "Hi"}], True)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    # A row whose slots hold quotes, backslashes and Jinja syntax is still rendered literally.
    odd = Template(name="o'dd #}", user="{{bos}}'\\{% u %}\n{{content}}{{eos}}\\n", assistant="{{content}}'",
                   system="{# s #}{{content}}\t", prefix="{{eos}}{{bos}}", default_system="d'\\")
    tokenizer = make_tokenizer("odd")
    conv = conversation("multi-turn")
    assert render(tokenizer, to_jinja(odd), hf_messages(conv), False) == "".join(odd.render_segments(tokenizer, conv))


@pytest.mark.parametrize(
    ("messages", "kwargs", "says"),
    [
        ([{"role": "user", "content": "Hi"}], {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}], {},
         "tool calls"),
        ([{"role": "user", "content": "Hi"}, {"role": "function", "content": "{}"}], {}, "tool calls"),
        ([{"role": "user", "content": "Hi"}, {"role": "user", "content": "Again"}], {}, "alternate"),
        ([{"role": "assistant", "content": "Hi"}], {}, "alternate"),
        ([{"role": "user", "content": "Hi"}, {"role": "system", "content": "late"}], {}, "roles"),
        ([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], {}, "text"),
    ],
    ids=["tools", "tool_calls", "function", "two-users", "assistant-first", "late-system", "list-content"],
)
def test_what_lmforge_cannot_render_is_refused(messages, kwargs, says):
    tokenizer = make_tokenizer("qwen")
    with pytest.raises(TemplateError, match=says):
        tokenizer.apply_chat_template(messages, chat_template=to_jinja(TEMPLATES.get("qwen")), tokenize=False,
                                      **kwargs)
