"""Chat templates against oracles: copies of each model's published chat template (tests/assets/chat_templates;
each file's leading comment names its source and what was trimmed) rendered by `apply_chat_template` on a
tokenizer trained on the spot.

What is checked, in numbers: the turn pairs concatenate to exactly the oracle's token ids; each response span
decodes to exactly the assistant text plus its end-of-turn tokens; `auto` splits the tokenizer's own template
into the same spans as the named row; unknown names and unusable tokenizers fail with ConfigError. Where an
answer would merge into its prompt's last characters, every template (and `auto`) trains on the prompt ids
that generation sends for the same history, and on the answer's own ids.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
from lmforge.data.templates import TEMPLATES, HfChatTemplate, Template, get_template
from lmforge.data.templates.template import encode_segments
from lmforge.errors import ConfigError, DataError
from lmforge.model.new_tokenizer import build_tokenizer, read_corpus
from lmforge.model.special_tokens import CHATML_TOKENS, TEMPLATE_TOKENS
from lmforge.types import IGNORE_INDEX, Conversation, Message, Role

ORACLES = Path(__file__).parents[1] / "assets" / "chat_templates"

CONV = Conversation(
    [
        Message(Role.USER, "What is the capital of France?"),
        Message(Role.ASSISTANT, "The capital of France is Paris."),
        Message(Role.USER, "And of Italy?\nAnswer in one word."),
        Message(Role.ASSISTANT, "Rome"),
    ],
    system="You are a terse geography tutor.",
)

# name -> (bos, eos) like the real model's tokenizer, and the text around an answer in a response span.
# EOS stands for the tokenizer's eos token.
EOS = "\0eos"
CASES = {
    "qwen": (None, "<|endoftext|>", "", "<|im_end|>\n"),
    "qwen3_nothink": (None, "<|im_end|>", "", "<|im_end|>\n"),
    "chatml": (None, "<|endoftext|>", "", "<|im_end|>\n"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "", "<|eot_id|>"),
    "llama2": ("<s>", "</s>", " ", " " + EOS),
    "mistral": ("<s>", "</s>", " ", EOS),
    "gemma": ("<bos>", "<eos>", "", "<end_of_turn>\n"),
    "phi": (None, "<|endoftext|>", "", "<|end|>\n"),
    "default": (None, "<|endoftext|>", "", EOS + "\n"),
    "llama4": ("<|begin_of_text|>", "<|eot|>", "", "<|eot|>"),
    "gemma2": ("<bos>", "<eos>", "", "<end_of_turn>\n"),
    "gemma3": ("<bos>", "<eos>", "", "<end_of_turn>\n"),
    "mistral_small": ("<s>", "</s>", "", EOS),
    "phi4": (None, "<|im_end|>", "", "<|im_end|>"),
    "deepseek3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "", EOS),
    "glm4": (None, "<|endoftext|>", "\n", ""),  # efficient_eos: the processor adds eos (see its test)
    "granite3": (None, "<|end_of_text|>", "", "<|end_of_text|>\n"),
    "cohere": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "", EOS),
    "yi": (None, "<|im_end|>", "", "<|im_end|>\n"),
    "olmo2": ("<|endoftext|>", "<|endoftext|>", "", EOS + "\n"),
    "tulu": ("<|begin_of_text|>", "<|end_of_text|>", "", EOS + "\n"),
    "intern2": ("<s>", "</s>", "", "<|im_end|>\n"),
    "alpaca": (None, "<|endoftext|>", "", EOS + "\n\n"),
    "vicuna": (None, "<|endoftext|>", "", EOS),
}
# Reasoning rows, checked in test_reasoning_templates.py: (bos, eos) for the boundary test.
REASONING_TOKENS = {"qwen3": (None, "<|im_end|>"), "deepseekr1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")}

# Deliberate differences from the model's own template, each asserted below:
ORACLE_WITH_SYSTEM = {"gemma2": "gemma"}  # Gemma 2's template refuses a system prompt; the row fuses it as Gemma 3
ROW_WRAPS_SYSTEM = {"yi"}  # Yi's template writes it bare; the row (as LLaMA-Factory) in a ChatML system turn
ROW_DEFAULT_SYSTEM_ONLY = {"intern2"}  # LLaMA-Factory's default system prompt, absent from the model's template
ROW_TRAILING_TEXT = {"olmo2": "\n", "tulu": "\n"}  # after the last answer's eos (the model's template has none)
# Tulu 3's published template writes no bos; the row writes <|begin_of_text|> first, as OLMo 2's template does
# for the same format: Tulu 3 is a Llama 3.1 model, whose tokenizer puts <|begin_of_text|> before any text it
# encodes with special tokens, and lmforge encodes without them. LLaMA-Factory has no tulu row to follow.
ROW_ADDS_BOS = {"tulu"}


def make_tokenizer(name: str, chat_template: str | None = None):
    bos, eos = CASES[name][:2] if name in CASES else REASONING_TOKENS[name]
    return build_tokenizer(special_tokens=TEMPLATE_TOKENS, bos_token=bos, eos_token=eos, chat_template=chat_template)


def oracle(name: str) -> str:
    return (ORACLES / f"{name}.jinja").read_text()


def hf_messages(conv: Conversation) -> list[dict]:
    messages = [{"role": "system", "content": conv.system}] if conv.system else []
    return messages + [{"role": str(m.role), "content": m.content} for m in conv.messages]


def oracle_ids(tokenizer, template_text: str, messages: list[dict], add_generation_prompt=False, **kwargs):
    return tokenizer.apply_chat_template(
        messages, chat_template=template_text, tokenize=True, add_generation_prompt=add_generation_prompt, **kwargs
    )["input_ids"]


def flat(pairs):
    return [tok for prompt, response in pairs for tok in prompt + response]


# ---- (a) every named row against its model's chat template ------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_system", [True, False], ids=["system", "no-system"])
def test_named_template_matches_reference_token_by_token(name, with_system):
    if with_system and name in ROW_WRAPS_SYSTEM:
        pytest.skip("the row's system turn differs on purpose: test_yi_wraps_the_system_prompt_in_a_chatml_turn")
    tokenizer = make_tokenizer(name)
    conv = CONV if with_system else Conversation(CONV.messages)
    template = get_template(name, tokenizer)
    pairs = template.encode_turns(tokenizer, conv)

    reference = oracle(ORACLE_WITH_SYSTEM.get(name, name) if with_system else name)
    reference_conv = conv
    if name in ROW_DEFAULT_SYSTEM_ONLY and not with_system:
        reference_conv = Conversation(conv.messages, system=template.default_system)
    text = tokenizer.apply_chat_template(hf_messages(reference_conv), chat_template=reference, tokenize=False)
    if name in ROW_ADDS_BOS:
        assert not text.startswith(tokenizer.bos_token)
        text = tokenizer.bos_token + text
    expected = encode(tokenizer, text + ROW_TRAILING_TEXT.get(name, ""))
    assert len(pairs) == 2
    assert flat(pairs) == expected  # token by token, not just the text

    lead, tail = CASES[name][2], CASES[name][3].replace(EOS, tokenizer.eos_token)
    answers = [m.content for m in conv.messages if m.role == Role.ASSISTANT]
    for (prompt_ids, response_ids), answer in zip(pairs, answers):
        assert tokenizer.decode(response_ids) == lead + answer + tail
        assert answer not in tokenizer.decode(prompt_ids)


@pytest.mark.parametrize("name", sorted(CASES))
def test_encode_prompt_is_the_reference_generation_prompt(name):
    tokenizer = make_tokenizer(name)
    template = get_template(name, tokenizer)
    prompt_conv = Conversation(CONV.messages[:3], system=CONV.system)
    prompt = template.encode_prompt(tokenizer, prompt_conv)

    if name not in ROW_WRAPS_SYSTEM:
        reference = oracle(ORACLE_WITH_SYSTEM.get(name, name))
        bos = [tokenizer.bos_token_id] if name in ROW_ADDS_BOS else []
        assert prompt == bos + oracle_ids(tokenizer, reference, hf_messages(prompt_conv), add_generation_prompt=True)
    # ... and is exactly what training puts before the last answer.
    first, second = template.encode_turns(tokenizer, CONV)
    assert prompt == first[0] + first[1] + second[0]


def test_qwen_fills_in_its_default_system_prompt():
    tokenizer = make_tokenizer("qwen")
    pairs = get_template("qwen", tokenizer).encode_turns(tokenizer, Conversation(CONV.messages))
    assert tokenizer.decode(pairs[0][0]).startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    assert TEMPLATES.get("qwen3_nothink").default_system == ""


def test_yi_wraps_the_system_prompt_in_a_chatml_turn():
    """Yi's own template writes the system prompt bare before the first turn; the row, as LLaMA-Factory's,
    gives it a ChatML system turn. Everything after it is Yi's text token for token."""
    tokenizer = make_tokenizer("yi")
    pairs = get_template("yi", tokenizer).encode_turns(tokenizer, CONV)
    yi_text = tokenizer.apply_chat_template(hf_messages(CONV), chat_template=oracle("yi"), tokenize=False)
    assert yi_text.startswith(CONV.system + "<|im_start|>user\n")
    row_text = yi_text.replace(CONV.system, "<|im_start|>system\n" + CONV.system + "<|im_end|>\n", 1)
    assert flat(pairs) == encode(tokenizer, row_text)


def test_gemma2_system_prompt_goes_where_gemma3_puts_it():
    tokenizer = make_tokenizer("gemma2")
    with pytest.raises(Exception, match="System role not supported"):  # Gemma 2's own template
        oracle_ids(tokenizer, oracle("gemma2"), hf_messages(CONV))
    gemma2, gemma3 = get_template("gemma2", tokenizer), get_template("gemma3", tokenizer)
    assert gemma2.encode_turns(tokenizer, CONV) == gemma3.encode_turns(tokenizer, CONV)


def test_efficient_eos_rows_end_the_sample_with_eos_where_the_model_template_has_none():
    """gemma2 and glm4 (LLaMA-Factory's efficient_eos rows): the text is the model's; the processor labels eos
    at the first token of the next prompt and appends one eos to the sample, which the templates never write."""
    for name in ("gemma2", "glm4"):
        tokenizer = make_tokenizer(name)
        template = get_template(name, tokenizer)
        conv = Conversation(CONV.messages)
        example = encode_supervised(conv, template, tokenizer, SupervisedOptions(cutoff_len=512))
        reference = oracle_ids(tokenizer, oracle(name), hf_messages(conv))
        assert example["input_ids"] == reference + [tokenizer.eos_token_id]
        (p1, r1), (p2, r2) = template.encode_turns(tokenizer, conv)
        eos = tokenizer.eos_token_id
        assert example["labels"] == [IGNORE_INDEX] * len(p1) + r1 + [eos] + [IGNORE_INDEX] * (len(p2) - 1) + r2 + [eos]


def test_intern2_fills_in_internlms_system_prompt():
    tokenizer = make_tokenizer("intern2")
    ((prompt, _), _) = get_template("intern2", tokenizer).encode_turns(tokenizer, Conversation(CONV.messages))
    assert tokenizer.decode(prompt).startswith("<s><|im_start|>system\nYou are an AI assistant whose name is InternLM")


def test_qwen_tools_function_call_and_observation_match_reference():
    tokenizer = make_tokenizer("qwen")
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        },
    }
    call = {"name": "add", "arguments": {"a": 2, "b": 3}}
    conv = Conversation(
        [
            Message(Role.USER, "What is 2+3?"),
            Message(Role.FUNCTION, json.dumps(call)),
            Message(Role.OBSERVATION, "5"),
            Message(Role.ASSISTANT, "It is 5."),
        ],
        tools=json.dumps([tool]),
    )
    pairs = get_template("qwen", tokenizer).encode_turns(tokenizer, conv)
    messages = [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "It is 5."},
    ]
    assert flat(pairs) == oracle_ids(tokenizer, oracle("qwen"), messages, tools=[tool])
    assert (
        tokenizer.decode(pairs[0][1])
        == '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>\n'
    )
    assert tokenizer.decode(pairs[1][0]) == (
        "<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_tool_format_appends_tools_to_system_and_writes_react_calls():
    tokenizer = make_tokenizer("llama3")
    tool = {"name": "add", "description": "Add.", "parameters": {"properties": {"a": {"type": "integer"}}}}
    conv = Conversation(
        [Message(Role.USER, "2+3?"), Message(Role.FUNCTION, '{"name": "add", "arguments": {"a": 2}}')],
        system="Sys.",
        tools=json.dumps([tool]),
    )
    ((prompt, response),) = get_template("llama3", tokenizer).encode_turns(tokenizer, conv)
    assert tokenizer.decode(prompt).startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSys.You have access to the following tools:\n"
        "> Tool Name: add\nTool Description: Add.\nTool Args:\n  - a (integer): \n\n"
    )
    assert tokenizer.decode(response) == 'Action: add\nAction Input: {"a": 2}<|eot_id|>'


def test_stop_token_ids():
    tokenizer = make_tokenizer("qwen")
    ids = get_template("qwen", tokenizer).stop_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|endoftext|>", "<|im_end|>"]
    # llama3 also stops on <|eom_id|>, but only where the tokenizer has it as one token.
    tokenizer = make_tokenizer("llama3")
    assert tokenizer.convert_ids_to_tokens(get_template("llama3", tokenizer).stop_token_ids(tokenizer)) == [
        "<|eot_id|>"
    ]


# ---- (b) template: auto -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chatml", "qwen", "llama3", "llama2", "mistral", "gemma"])
def test_auto_splits_like_the_named_template(name):
    tokenizer = make_tokenizer(name, chat_template=oracle(name))
    auto = get_template("auto", tokenizer)
    named = get_template(name, tokenizer)
    assert isinstance(auto, HfChatTemplate) and auto.name == "auto" and not auto.efficient_eos
    for conv in (CONV, Conversation(CONV.messages)):
        assert auto.encode_turns(tokenizer, conv) == named.encode_turns(tokenizer, conv)
    prompt_conv = Conversation(CONV.messages[:3], system=CONV.system)
    assert auto.encode_prompt(tokenizer, prompt_conv) == named.encode_prompt(tokenizer, prompt_conv)


def test_auto_finds_the_end_of_turn_stop_token():
    tokenizer = make_tokenizer("chatml", chat_template=oracle("chatml"))
    auto = get_template("auto", tokenizer)
    assert auto.end_of_turn == "<|im_end|>"
    assert tokenizer.convert_ids_to_tokens(auto.stop_token_ids(tokenizer)) == ["<|endoftext|>", "<|im_end|>"]


def test_auto_refuses_a_template_that_is_not_prefix_stable():
    # Like Qwen3's thinking template: only the last answer gets a <think> block, so earlier turns change.
    thinking = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' -}}"
        "{%- if m['role'] == 'assistant' and loop.last -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
        "{{- m['content'] + '<|im_end|>\\n' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    with pytest.raises(ConfigError, match="template 'auto'.*not prefix-stable"):
        get_template("auto", make_tokenizer("chatml", chat_template=thinking))


def test_auto_needs_a_chat_template():
    with pytest.raises(ConfigError, match="template 'auto'.*has none"):
        get_template("auto", make_tokenizer("chatml"))


def test_auto_wraps_template_exceptions_as_config_error():
    tokenizer = make_tokenizer("gemma", chat_template=oracle("gemma"))
    auto = get_template("auto", tokenizer)
    bad = Conversation([Message(Role.OBSERVATION, "x"), Message(Role.ASSISTANT, "y")])  # tool first: gemma refuses
    with pytest.raises(ConfigError, match="chat_template refused"):
        auto.encode_turns(tokenizer, bad)


# ---- (c) errors written for users -------------------------------------------------------------------------


def test_unknown_template_name_suggests_the_closest():
    tokenizer = make_tokenizer("qwen")
    with pytest.raises(ConfigError, match=r"unknown template 'qwen2' \(did you mean 'qwen'\?\)"):
        get_template("qwen2", tokenizer)
    with pytest.raises(ConfigError, match=r"did you mean 'llama3'"):
        get_template("lama3", tokenizer)


def test_template_refuses_a_tokenizer_without_its_tokens():
    chatml_only = build_tokenizer(special_tokens=CHATML_TOKENS, bos_token="<|begin_of_text|>")
    with pytest.raises(ConfigError) as err:
        get_template("llama3", chatml_only)
    message = str(err.value)
    assert "template 'llama3'" in message and "'template'" in message
    assert "'<|start_header_id|>'" in message and "'<|eot_id|>'" in message
    get_template("chatml", chatml_only)  # the tokens it does have are enough for ChatML


def test_template_refuses_a_tokenizer_without_bos():
    with pytest.raises(ConfigError, match="template 'gemma' needs a bos_token"):
        get_template("gemma", build_tokenizer(special_tokens=TEMPLATE_TOKENS))


def test_malformed_conversations_raise_data_error():
    tokenizer = make_tokenizer("qwen")
    template = get_template("qwen", tokenizer)
    with pytest.raises(DataError, match="alternate"):
        template.encode_turns(tokenizer, Conversation(CONV.messages[:3]))  # ends with a prompt
    with pytest.raises(DataError, match="alternate"):
        template.encode_prompt(tokenizer, CONV)  # ends with a response
    with pytest.raises(DataError, match="not valid JSON"):
        template.encode_turns(tokenizer, Conversation([Message(Role.USER, "q"), Message(Role.FUNCTION, "add(1)")]))


# ---- (d) efficient_eos --------------------------------------------------------------------------------------

EFFICIENT = Template(
    name="efficient", user="<|user|>\n{{content}}<|assistant|>\n", assistant="{{content}}", efficient_eos=True
)


def test_efficient_eos_responses_carry_no_eos_and_the_processor_labels_it_at_the_next_prompt():
    tokenizer = make_tokenizer("phi")
    eos = tokenizer.eos_token_id
    pairs = EFFICIENT.encode_turns(tokenizer, Conversation(CONV.messages))
    assert [tokenizer.decode(r) for _, r in pairs] == ["The capital of France is Paris.", "Rome"]
    assert all(eos not in prompt + response for prompt, response in pairs)

    example = encode_supervised(Conversation(CONV.messages), EFFICIENT, tokenizer, SupervisedOptions(cutoff_len=512))
    (p1, r1), (p2, r2) = pairs
    assert example["input_ids"] == p1 + r1 + p2 + r2 + [eos]
    assert example["labels"] == ([IGNORE_INDEX] * len(p1) + r1 + [eos] + [IGNORE_INDEX] * (len(p2) - 1) + r2 + [eos])


def test_efficient_eos_rows_may_not_end_responses_with_eos():
    with pytest.raises(ValueError, match="efficient_eos"):
        Template(name="bad", user="{{content}}", assistant="{{content}}{{eos}}", efficient_eos=True)
    # as in LLaMA-Factory, only these rows
    assert {name for name in TEMPLATES.names() if TEMPLATES.get(name).efficient_eos} == {"gemma2", "glm4"}


def test_pairs_give_the_processor_end_of_turn_labels():
    tokenizer = make_tokenizer("qwen")
    template = get_template("qwen", tokenizer)
    example = encode_supervised(CONV, template, tokenizer, SupervisedOptions(cutoff_len=512))
    labelled = [tok for tok in example["labels"] if tok != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "The capital of France is Paris.<|im_end|>\nRome<|im_end|>\n"


# ---- turn boundaries: training sees the prompt ids that generation sends -------------------------------------


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# The fixture corpus plus a little markdown, so that ':**' and '\n\n\n' are single tokens, as in real vocabularies.
MARKDOWN_CORPUS = (*read_corpus(), *["Note:**important**\n\n\n"] * 20)


def markdown_tokenizer():
    return build_tokenizer(special_tokens=TEMPLATE_TOKENS, corpus=list(MARKDOWN_CORPUS))


def test_default_template_trains_on_the_prompt_generation_sends_when_the_answer_would_merge_into_it():
    """Issue 16's case: 'Assistant:' + '**Yes**' tokenizes to '...Assistant', ':**', ... as one text."""
    tokenizer = markdown_tokenizer()
    template = get_template("default", tokenizer)
    conv = Conversation([Message(Role.USER, "Reply in bold."), Message(Role.ASSISTANT, "**Yes**")])
    whole = encode(tokenizer, "Human: Reply in bold.<|endoftext|>\nAssistant:**Yes**<|endoftext|>\n")
    assert ":**" in tokenizer.convert_ids_to_tokens(whole)  # the merge the whole text makes

    ((prompt, response),) = template.encode_turns(tokenizer, conv)
    generation_prompt = template.encode_prompt(tokenizer, Conversation(conv.messages[:1]))
    assert prompt == generation_prompt == encode(tokenizer, "Human: Reply in bold.<|endoftext|>\nAssistant:")
    assert tokenizer.convert_ids_to_tokens(prompt)[-2:] == ["Assistant", ":"]
    assert response == encode(tokenizer, "**Yes**<|endoftext|>\n")
    assert tokenizer.convert_ids_to_tokens(response)[0] == "**"


# Texts that merge across turn boundaries: ':' + '\n' is one token in both tokenizers, '\n' + '\n' too, and
# ':**' and '\n\n\n' in the markdown one. Answers open with a newline or '**' after headers that end in one
# or in ':' (default's 'Assistant:'), and with `empty` each text meets the last one's ':'.
MERGING = Conversation(
    [
        Message(Role.USER, "List two cities:"),
        Message(Role.ASSISTANT, "\n**Paris**\n- Rome:"),
        Message(Role.USER, "\nWhy those?"),
        Message(Role.ASSISTANT, "**Capitals.**"),
    ],
    system="Answer:",
)

# Model templates that `auto` refuses (not prefix-stable, or refusing the system prompt): checked to raise below.
AUTO_REFUSES = {"qwen3", "deepseekr1", "gemma2"}
BOUNDARY_CASES = [
    *[(name, False) for name in sorted(TEMPLATES.names())],
    # template: auto on each model's own
    *[(path.stem, True) for path in sorted(ORACLES.glob("*.jinja")) if path.stem not in AUTO_REFUSES],
]


def boundary_tokenizer(name, corpus=None, chat_template=None):
    bos, eos = CASES[name][:2] if name in CASES else REASONING_TOKENS.get(name, (None, "<|endoftext|>"))
    return build_tokenizer(
        special_tokens=TEMPLATE_TOKENS, bos_token=bos, eos_token=eos, corpus=list(corpus) if corpus else None,
        chat_template=chat_template,
    )


@pytest.mark.parametrize("name", sorted(AUTO_REFUSES))
def test_auto_refuses_the_model_templates_it_cannot_split(name):
    tokenizer = boundary_tokenizer(name, chat_template=oracle(name))
    with pytest.raises(ConfigError, match="template 'auto'|chat_template refused"):
        get_template("auto", tokenizer).encode_turns(tokenizer, MERGING)


@pytest.mark.parametrize(("name", "auto"), BOUNDARY_CASES, ids=[n + "-auto" * a for n, a in BOUNDARY_CASES])
@pytest.mark.parametrize("corpus", [None, MARKDOWN_CORPUS], ids=["fixture", "markdown"])
def test_training_prompts_are_the_ids_generation_sends_for_the_same_history(name, auto, corpus):
    """Whole-text tokenization failed this for default, empty, chatml, qwen, qwen3_nothink, gemma, phi (and
    llama3 with the markdown tokenizer), and for auto on the chatml, default, phi, qwen and qwen3_nothink ones."""
    tokenizer = boundary_tokenizer(name, corpus, oracle(name) if auto else None)
    template = get_template("auto" if auto else name, tokenizer)
    pairs = template.encode_turns(tokenizer, MERGING)
    segments = template.render_segments(tokenizer, MERGING)

    assert tokenizer.decode(flat(pairs)) == "".join(segments)  # every character is trained on, once
    for turn, (prompt, response) in enumerate(pairs):
        history = Conversation(MERGING.messages[: 2 * turn + 1], MERGING.system)
        if turn and getattr(template, "thought_words", None):
            # Training keeps earlier answers' thinking blocks, generation drops them (test_reasoning_templates.py)
            continue
        assert flat(pairs[:turn]) + prompt == template.encode_prompt(tokenizer, history)
        # The answer is its own text tokenized from its start: what the model must generate after the prompt.
        assert response == encode(tokenizer, segments[2 * turn + 1])


def legacy_sentencepiece_tokenizer():
    """A BPE like Llama 2's legacy tokenizer: every text (each run between special tokens) gets a '▁' dummy
    prefix and spaces become '▁'; no pre-tokenizer, so merges may cross any character."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(BPE(unk_token=None))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    alphabet = sorted(set("".join(read_corpus())) | set("▁"))
    trainer = BpeTrainer(vocab_size=800, show_progress=False, initial_alphabet=alphabet)
    backend.train_from_iterator(read_corpus(), trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<s>", "</s>")])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token=None)


@pytest.mark.parametrize("name", ["llama2", "mistral", "default", "empty"])
def test_a_dummy_prefix_tokenizer_gets_no_prefix_mid_text(name):
    """Segments that open with plain text are read as continuations: ' The capital' after '[/INST]' stays
    '▁The', as in the whole text, where encoding it alone would give '▁▁', 'The' (a token generation after
    '[/INST]' would never start with)."""
    tokenizer = legacy_sentencepiece_tokenizer()
    template = get_template(name, tokenizer)
    segments = template.render_segments(tokenizer, CONV)
    assert [tok for seg in segments for tok in encode(tokenizer, seg)] != encode(tokenizer, "".join(segments))

    pairs = template.encode_turns(tokenizer, CONV)
    assert flat(pairs) == encode(tokenizer, "".join(segments))  # no merge here, so the whole text's ids
    for conv in (CONV, MERGING):  # with merges too, training and generation agree
        pairs = template.encode_turns(tokenizer, conv)
        history = Conversation(conv.messages[:3], conv.system)
        assert flat(pairs[:1]) + pairs[1][0] == template.encode_prompt(tokenizer, history)


def test_segments_are_cut_where_generation_cuts_them():
    """Cut a text at every character: the head is always the head's own ids (what generation encodes); the
    tail is the whole text's ids after them where no token spans the cut, else the tail's own ids."""
    tokenizer = make_tokenizer("qwen")
    text = "Hello world,  the harbor\n\nwas full:\n**yes**<|im_end|>\n"
    whole = encode(tokenizer, text)
    spanned = 0
    for cut in range(1, len(text)):
        head, tail = encode_segments(tokenizer, [text[:cut], text[cut:]])
        assert head == encode(tokenizer, text[:cut])
        if whole[: len(head)] == head:
            assert head + tail == whole
        else:
            spanned += 1
            assert tail == encode(tokenizer, text[cut:])
    assert spanned >= 5  # the merge path really ran


def test_template_rows_are_picklable_for_dataset_map_workers():
    import pickle

    tokenizer = make_tokenizer("chatml", chat_template=oracle("chatml"))
    for template in (get_template("chatml", tokenizer), get_template("auto", tokenizer)):
        clone = pickle.loads(pickle.dumps(template))
        assert clone.encode_turns(tokenizer, CONV) == template.encode_turns(tokenizer, CONV)


def test_content_is_never_read_as_markers():
    tokenizer = make_tokenizer("default")
    conv = Conversation([Message(Role.USER, "say {{eos}} and {{content}}"), Message(Role.ASSISTANT, "ok")])
    ((prompt, _),) = get_template("default", tokenizer).encode_turns(tokenizer, conv)
    assert tokenizer.decode(prompt) == "Human: say {{eos}} and {{content}}<|endoftext|>\nAssistant:"


def test_deepcopied_tokenizer_with_template_set_later_is_used_by_auto():
    tokenizer = copy.deepcopy(make_tokenizer("phi"))
    tokenizer.chat_template = oracle("phi")
    pairs = get_template("auto", tokenizer).encode_turns(tokenizer, CONV)
    assert flat(pairs) == oracle_ids(tokenizer, oracle("phi"), hf_messages(CONV))
