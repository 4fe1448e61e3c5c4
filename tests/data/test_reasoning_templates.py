"""Reasoning templates (qwen3, deepseekr1) against Qwen3's and DeepSeek-R1's own chat templates, with
`enable_thinking` true and false as LLaMA-Factory treats it (see lmforge/data/templates/reasoning.py).

Checked in numbers: single-turn samples equal the model template's ids token by token, the empty think block
on the response side (trained) with enable_thinking true and on the prompt side (not trained) with false;
generation prompts equal Qwen3's with add_generation_prompt and its enable_thinking; and each place where
training deliberately differs from the model's template is asserted as the exact text difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.config.data_args import DataArguments
from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
from lmforge.data.templates import TEMPLATES, get_template
from lmforge.model.new_tokenizer import build_tokenizer
from lmforge.model.special_tokens import TEMPLATE_TOKENS
from lmforge.types import IGNORE_INDEX, Conversation, Message, Role

ORACLES = Path(__file__).parents[1] / "assets" / "chat_templates"
BLOCK = "<think>\n\n</think>\n\n"
THOUGHT = "<think>\nFrance's capital is Paris.\n</think>\n\n"

QWEN3 = build_tokenizer(special_tokens=TEMPLATE_TOKENS, eos_token="<|im_end|>")
R1 = build_tokenizer(
    special_tokens=TEMPLATE_TOKENS, bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>"
)


def conv(*answers: str, system: str = "Be terse.") -> Conversation:
    questions = ["What is the capital of France?", "And of Italy?"]
    messages = []
    for question, answer in zip(questions, answers):
        messages += [Message(Role.USER, question), Message(Role.ASSISTANT, answer)]
    return Conversation(messages, system=system)


def prompt_conv() -> Conversation:
    return Conversation(conv(THOUGHT + "Paris.", "Rome").messages[:3], system="Be terse.")


def hf(c: Conversation) -> list[dict]:
    return [{"role": "system", "content": c.system}] + [{"role": str(m.role), "content": m.content} for m in c.messages]


def jinja_text(tokenizer, name: str, c: Conversation, **kwargs) -> str:
    template_text = (ORACLES / f"{name}.jinja").read_text()
    return tokenizer.apply_chat_template(hf(c), chat_template=template_text, tokenize=False, **kwargs)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def flat(pairs) -> list[int]:
    return [tok for prompt, response in pairs for tok in prompt + response]


def qwen3(enable_thinking: bool):
    return get_template("qwen3", QWEN3, enable_thinking=enable_thinking)


# ---- the rows are data ---------------------------------------------------------------------------------------


def test_reasoning_rows_carry_thought_words_and_the_config_sets_enable_thinking():
    thought_words = ("<think>\n", "\n</think>\n\n")
    assert TEMPLATES.get("qwen3").thought_words == TEMPLATES.get("deepseekr1").thought_words == thought_words
    reasoning = {name for name in TEMPLATES.names() if TEMPLATES.get(name).thought_words}
    assert reasoning == {"qwen3", "deepseekr1"}
    assert DataArguments().enable_thinking is True  # LLaMA-Factory's default
    assert qwen3(False).enable_thinking is False and TEMPLATES.get("qwen3").enable_thinking is True
    # other rows ignore the setting (and stay the registered object)
    assert get_template("qwen3_nothink", QWEN3, enable_thinking=False) is TEMPLATES.get("qwen3_nothink")


# ---- qwen3: single turn, token by token ------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["Paris.", THOUGHT + "Paris."], ids=["no-thought", "thought"])
def test_qwen3_thinking_single_turn_is_qwen3s_template_and_trains_the_block(answer):
    template = qwen3(True)
    ((prompt, response),) = template.encode_turns(QWEN3, conv(answer))
    assert prompt + response == ids(QWEN3, jinja_text(QWEN3, "qwen3", conv(answer)))
    # the (empty or real) block is part of the answer: the model learns to open and close it
    expected_answer = answer if answer.startswith("<think>") else BLOCK + answer
    assert QWEN3.decode(response) == expected_answer + "<|im_end|>\n"
    assert QWEN3.decode(prompt).endswith("<|im_start|>assistant\n")


def test_qwen3_no_thinking_puts_the_empty_block_in_the_prompt_untrained():
    template = qwen3(False)
    sample = conv("Paris.")
    ((prompt, response),) = template.encode_turns(QWEN3, sample)
    # Qwen3's template renders the last answer with the empty block whatever enable_thinking says: same ids
    assert prompt + response == ids(QWEN3, jinja_text(QWEN3, "qwen3", sample))
    assert QWEN3.decode(prompt).endswith("<|im_start|>assistant\n" + BLOCK)
    assert QWEN3.decode(response) == "Paris.<|im_end|>\n"
    # ... and that prompt is the generation prompt of Qwen3 with enable_thinking=False
    history = Conversation(sample.messages[:1], system=sample.system)
    generation = ids(QWEN3, jinja_text(QWEN3, "qwen3", history, add_generation_prompt=True, enable_thinking=False))
    assert prompt == template.encode_prompt(QWEN3, history) == generation

    example = encode_supervised(sample, template, QWEN3, SupervisedOptions(cutoff_len=512))
    labelled = [tok for tok in example["labels"] if tok != IGNORE_INDEX]
    assert QWEN3.decode(labelled) == "Paris.<|im_end|>\n"


def test_qwen3_no_thinking_removes_thoughts_from_answers():
    """Difference: Qwen3's template would render the thought (its enable_thinking only changes the generation
    prompt); LLaMA-Factory's enable_thinking: false trains the answer without it, after the empty block."""
    ((prompt, response),) = qwen3(False).encode_turns(QWEN3, conv(THOUGHT + "Paris."))
    assert QWEN3.decode(response) == "Paris.<|im_end|>\n"
    with_thought = jinja_text(QWEN3, "qwen3", conv(THOUGHT + "Paris."))
    assert QWEN3.decode(prompt + response) == with_thought.replace(THOUGHT, BLOCK)


# ---- generation prompts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_qwen3_generation_prompt_is_qwen3s_own(enable_thinking):
    """Earlier answers lose their reasoning (as in Qwen3's template and LLaMA-Factory's encode_oneturn); with
    enable_thinking false the prompt ends with the empty block."""
    history = prompt_conv()
    prompt = qwen3(enable_thinking).encode_prompt(QWEN3, history)
    expected = jinja_text(QWEN3, "qwen3", history, add_generation_prompt=True, enable_thinking=enable_thinking)
    assert prompt == ids(QWEN3, expected)
    assert "France's capital" not in QWEN3.decode(prompt)
    assert QWEN3.decode(prompt).endswith("<|im_start|>assistant\n" + ("" if enable_thinking else BLOCK))


# ---- multi-turn: where LLaMA-Factory's training and Qwen3's template differ -------------------------------------


@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("first", ["Paris.", THOUGHT + "Paris."], ids=["no-thought", "thought"])
def test_qwen3_multi_turn_training_keeps_each_answers_block(enable_thinking, first):
    """Qwen3's template renders answers before the last user query without any block; training (as
    LLaMA-Factory's encode_multiturn) handles every answer alike: with enable_thinking true the first answer
    keeps its thought (or gets the empty block, trained); with false its thought is dropped and the empty block
    closes its prompt. The rest is Qwen3's text, token for token."""
    sample = conv(first, "Rome")
    pairs = qwen3(enable_thinking).encode_turns(QWEN3, sample)
    reference = jinja_text(QWEN3, "qwen3", sample)
    assert "<|im_start|>assistant\nParis." in reference  # Qwen3 drops the first answer's block
    first_block = first[: -len("Paris.")] if enable_thinking and first != "Paris." else BLOCK
    expected = reference.replace("<|im_start|>assistant\nParis.", "<|im_start|>assistant\n" + first_block + "Paris.")
    assert flat(pairs) == ids(QWEN3, expected)

    (p1, r1), (p2, r2) = pairs
    assert QWEN3.decode(r1) == (first_block if enable_thinking else "") + "Paris.<|im_end|>\n"
    assert QWEN3.decode(r2) == ("" if not enable_thinking else BLOCK) + "Rome<|im_end|>\n"
    # The first turn's prompt is the generation prompt; the second's history differs from generation's (which
    # drops the first answer's block) by exactly that block.
    history = Conversation(sample.messages[:1], system=sample.system)
    assert p1 == qwen3(enable_thinking).encode_prompt(QWEN3, history)
    generation = qwen3(enable_thinking).encode_prompt(QWEN3, Conversation(sample.messages[:3], system=sample.system))
    assert QWEN3.decode(p1 + r1 + p2).replace(first_block, "", 1) == QWEN3.decode(generation)


def test_qwen3_no_thinking_boundary_no_token_spans_prompt_and_answer():
    """With the block at the end of the prompt, an answer that opens with a newline still starts its own ids."""
    template = qwen3(False)
    sample = conv("\n**Paris**", "\nRome")
    pairs = template.encode_turns(QWEN3, sample)
    segments = template.render_segments(QWEN3, sample)
    assert QWEN3.decode(flat(pairs)) == "".join(segments)
    for (prompt, response), segment in zip(pairs, segments[1::2]):
        assert response == ids(QWEN3, segment)
        assert QWEN3.decode(prompt).endswith(BLOCK)


# ---- deepseekr1 ---------------------------------------------------------------------------------------------------


def test_deepseekr1_trains_the_block_r1s_template_drops():
    """DeepSeek-R1's template renders every answer without its reasoning (keeping the newlines after
    '</think>'); the row (LLaMA-Factory's) trains the empty block, or the thought, before the answer. The rest
    is R1's text token for token."""
    template = get_template("deepseekr1", R1)
    head = "<｜begin▁of▁sentence｜>Be terse.<｜User｜>What is the capital of France?<｜Assistant｜>"
    for answer, r1_answer in (("Paris.", "Paris."), (THOUGHT + "Paris.", "\n\nParis.")):
        ((prompt, response),) = template.encode_turns(R1, conv(answer))
        assert jinja_text(R1, "deepseekr1", conv(answer)) == head + r1_answer + "<｜end▁of▁sentence｜>"
        block = BLOCK if answer == "Paris." else THOUGHT
        assert prompt + response == ids(R1, head + block + "Paris.<｜end▁of▁sentence｜>")
        assert R1.decode(response) == block + "Paris.<｜end▁of▁sentence｜>"


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_deepseekr1_generation_prompt(enable_thinking):
    """R1's template ends the generation prompt with '<think>\\n' (forcing the model to think); the row, as
    LLaMA-Factory's, leaves the opening to the model (enable_thinking true: it was trained to write the block)
    or closes an empty one (false). Earlier answers lose their thoughts in both; R1 keeps the newlines that
    followed '</think>', LLaMA-Factory's remove_thought strips them."""
    history = Conversation(conv(THOUGHT + "Paris.", "Rome").messages[:3], system="Be terse.")
    prompt = get_template("deepseekr1", R1, enable_thinking=enable_thinking).encode_prompt(R1, history)
    r1_text = jinja_text(R1, "deepseekr1", history, add_generation_prompt=True)
    tail = "<｜Assistant｜>\n\nParis.<｜end▁of▁sentence｜><｜User｜>And of Italy?<｜Assistant｜><think>\n"
    assert r1_text.endswith(tail)
    ours = r1_text[: -len("<think>\n")].replace("\n\nParis.", "Paris.") + ("" if enable_thinking else BLOCK)
    assert prompt == ids(R1, ours)


# ---- the run's setting reaches chat / api / predict -----------------------------------------------------------


def test_chat_uses_the_runs_thinking_setting_with_the_runs_template(tmp_path):
    from types import SimpleNamespace

    from lmforge.inference.engine import thinking_setting
    from lmforge.run_info import write_run_info

    write_run_info(tmp_path, {"template": "qwen3", "enable_thinking": False})

    def cfg(enable_thinking=True):
        model = SimpleNamespace(adapter_name_or_path=str(tmp_path), model_name_or_path="base")
        return SimpleNamespace(model=model, data=SimpleNamespace(enable_thinking=enable_thinking))

    assert thinking_setting(cfg(), "qwen3") is False  # trained without thinking: prompts end with the block
    assert thinking_setting(cfg(), "deepseekr1") is True  # another template: the config's (default) setting
    write_run_info(tmp_path, {"template": "qwen3", "enable_thinking": True})
    assert thinking_setting(cfg(False), "qwen3") is False  # the config's false always wins
