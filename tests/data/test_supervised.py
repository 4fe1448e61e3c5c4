"""Labels, token by token: a multi-turn sample with a system prompt under several templates."""

from __future__ import annotations

import pytest

from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
from lmforge.data.templates import get_template
from lmforge.model.new_tokenizer import build_tokenizer
from lmforge.model.special_tokens import ALL_CHAT_TOKENS
from lmforge.types import IGNORE_INDEX, Conversation, Message, Role

CONV = Conversation(
    [
        Message(Role.USER, "Name a red fruit."),
        Message(Role.ASSISTANT, "An apple."),
        Message(Role.USER, "And a yellow one?"),
        Message(Role.ASSISTANT, "A banana."),
    ],
    system="Answer briefly.",
)

# template -> (bos, eos, expected labelled text of each assistant turn)
CASES = {
    "qwen": (None, "<|endoftext|>", ["An apple.<|im_end|>\n", "A banana.<|im_end|>\n"]),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", ["An apple.<|eot_id|>", "A banana.<|eot_id|>"]),
    "gemma": ("<bos>", "<eos>", ["An apple.<end_of_turn>\n", "A banana.<end_of_turn>\n"]),
    "phi": (None, "<|endoftext|>", ["An apple.<|end|>\n", "A banana.<|end|>\n"]),
}


def tokenizer_for(name):
    bos, eos, _ = CASES[name]
    return build_tokenizer(special_tokens=ALL_CHAT_TOKENS, bos_token=bos, eos_token=eos)


def labelled_runs(example) -> list[list[int]]:
    """Maximal runs of labelled positions, as token ids."""
    runs, current = [], []
    for tok, label in zip(example["input_ids"], example["labels"]):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == tok  # a label is always the token at its own position (HF shifts inside the loss)
            current.append(label)
    if current:
        runs.append(current)
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_labels_cover_exactly_each_assistant_turn_and_its_end_token(name):
    tokenizer = tokenizer_for(name)
    template = get_template(name, tokenizer)
    example = encode_supervised(CONV, template, tokenizer, SupervisedOptions(cutoff_len=1024))
    pairs = template.encode_turns(tokenizer, CONV)
    assert example["input_ids"] == [t for p, r in pairs for t in p + r]
    # token by token: prompt positions -100, response positions = input_ids
    expected = [lab for p, r in pairs for lab in [IGNORE_INDEX] * len(p) + r]
    assert example["labels"] == expected
    assert [tokenizer.decode(run) for run in labelled_runs(example)] == CASES[name][2]
    assert "Answer briefly." in tokenizer.decode(example["input_ids"])
    assert example["attention_mask"] == [1] * len(example["input_ids"])


def test_train_on_prompt_labels_everything():
    tokenizer = tokenizer_for("qwen")
    template = get_template("qwen", tokenizer)
    example = encode_supervised(CONV, template, tokenizer, SupervisedOptions(1024, train_on_prompt=True))
    assert example["labels"] == example["input_ids"]


def test_mask_history_labels_only_the_last_turn():
    tokenizer = tokenizer_for("llama3")
    template = get_template("llama3", tokenizer)
    example = encode_supervised(CONV, template, tokenizer, SupervisedOptions(1024, mask_history=True))
    assert [tokenizer.decode(run) for run in labelled_runs(example)] == ["A banana.<|eot_id|>"]
    full = encode_supervised(CONV, template, tokenizer, SupervisedOptions(1024))
    assert example["input_ids"] == full["input_ids"]


def test_truncation_shares_the_budget_per_turn():
    tokenizer = tokenizer_for("qwen")
    template = get_template("qwen", tokenizer)
    (p1, r1), (p2, r2) = template.encode_turns(tokenizer, CONV)
    cutoff = len(p1) + len(r1) + 4  # the second turn gets 4 tokens, shared by its prompt and response
    example = encode_supervised(CONV, template, tokenizer, SupervisedOptions(cutoff))
    assert len(example["input_ids"]) == cutoff
    assert example["input_ids"][: len(p1) + len(r1)] == p1 + r1
    # second prompt (long) cut, second response (short, fits in half the budget? no) per share_budget rule
    from lmforge.data.processors.truncation import share_budget

    kept_p, kept_r = share_budget(len(p2), len(r2), 4)
    assert example["input_ids"][len(p1) + len(r1):] == p2[:kept_p] + r2[:kept_r]


def test_mask_history_keeps_the_last_turn_when_truncating():
    tokenizer = tokenizer_for("qwen")
    template = get_template("qwen", tokenizer)
    (_, _), (p2, r2) = template.encode_turns(tokenizer, CONV)
    example = encode_supervised(CONV, template, tokenizer, SupervisedOptions(len(p2) + len(r2), mask_history=True))
    assert example["input_ids"] == p2 + r2
    assert example["labels"] == [IGNORE_INDEX] * len(p2) + r2
