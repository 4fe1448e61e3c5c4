"""Pairwise (rm, dpo) and feedback (kto) processing: shared prompt, response-only labels, truncation, collation."""

from __future__ import annotations

import dataclasses
import json

import torch

from lmforge.data.collators import FeedbackCollator, PairwiseCollator
from lmforge.data.formats import pair_from_dict
from lmforge.data.loading import load_conversations
from lmforge.data.processors.feedback import encode_feedback, mismatched_responses
from lmforge.data.processors.pairwise import encode_pairwise
from lmforge.data.templates import get_template
from lmforge.model.new_tokenizer import build_tokenizer
from lmforge.model.special_tokens import ALL_CHAT_TOKENS
from lmforge.types import IGNORE_INDEX, Conversation, Message, PairSample, Role

TOKENIZER = build_tokenizer(special_tokens=ALL_CHAT_TOKENS, eos_token="<|endoftext|>")
QWEN = get_template("qwen", TOKENIZER)
PAIR = PairSample(
    Conversation([Message(Role.USER, "Hi"), Message(Role.ASSISTANT, "Hello."), Message(Role.USER, "Name a fruit.")],
                 system="Be brief."),
    chosen=Message(Role.ASSISTANT, "An apple."),
    rejected=Message(Role.ASSISTANT, "I will not say, because fruit is a difficult topic for me."),
)


def text(ids):
    return TOKENIZER.decode(ids)


def test_pair_shares_the_prompt_and_labels_only_the_response():
    out = encode_pairwise(PAIR, QWEN, TOKENIZER, cutoff_len=1024)
    prompt = QWEN.encode_prompt(TOKENIZER, PAIR.prompt)  # every earlier turn, up to the assistant header
    for side, response in (("chosen", "An apple."), ("rejected", PAIR.rejected.content)):
        ids, labels = out[f"{side}_input_ids"], out[f"{side}_labels"]
        assert ids[: len(prompt)] == prompt
        assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert labels[len(prompt):] == ids[len(prompt):]
        assert text(ids[len(prompt):]) == f"{response}<|im_end|>\n"


def test_pair_truncation_keeps_one_prompt_for_both():
    full = encode_pairwise(PAIR, QWEN, TOKENIZER, cutoff_len=1024)
    prompt_len = full["chosen_labels"].count(IGNORE_INDEX)
    longer = len(full["rejected_input_ids"]) - prompt_len
    assert prompt_len > longer + 1
    cutoff = 2 * longer + 1  # the longer response fits in half the budget: it stays whole, the prompt is cut
    out = encode_pairwise(PAIR, QWEN, TOKENIZER, cutoff_len=cutoff)
    assert len(out["rejected_input_ids"]) <= cutoff
    kept_prompt = [x == IGNORE_INDEX for x in out["chosen_labels"]].count(True)
    assert kept_prompt == [x == IGNORE_INDEX for x in out["rejected_labels"]].count(True) == cutoff - longer
    assert out["chosen_input_ids"][:kept_prompt] == full["chosen_input_ids"][:kept_prompt]


def test_efficient_eos_template_closes_both_responses_with_eos():
    template = dataclasses.replace(QWEN, name="qwen_efficient_eos", efficient_eos=True)
    plain = encode_pairwise(PAIR, QWEN, TOKENIZER, cutoff_len=1024)
    out = encode_pairwise(PAIR, template, TOKENIZER, cutoff_len=1024)
    for side in ("chosen", "rejected"):
        assert out[f"{side}_input_ids"] == plain[f"{side}_input_ids"] + [TOKENIZER.eos_token_id]
        assert out[f"{side}_labels"] == plain[f"{side}_labels"] + [TOKENIZER.eos_token_id]


def test_feedback_pairs_each_prompt_with_the_next_response():
    convs = [Conversation([Message(Role.USER, f"Q{i}"), Message(Role.ASSISTANT, f"A{i}")]) for i in range(3)]
    assert [m.content for m in mismatched_responses(convs)] == ["A1", "A2", "A0"]
    out = encode_feedback(convs[0], Message(Role.ASSISTANT, "A1"), QWEN, TOKENIZER, cutoff_len=1024)
    prompt = QWEN.encode_prompt(TOKENIZER, Conversation(convs[0].messages[:1]))
    assert out["input_ids"][: len(prompt)] == out["kl_input_ids"][: len(prompt)] == prompt
    assert text(out["input_ids"][len(prompt):]) == "A0<|im_end|>\n"
    assert text(out["kl_input_ids"][len(prompt):]) == "A1<|im_end|>\n"
    assert out["kl_labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)


def test_pairwise_collator_puts_chosen_rows_first_padded_together():
    features = [
        {"chosen_input_ids": [5, 6, 7], "chosen_labels": [-100, 6, 7], "rejected_input_ids": [5, 8],
         "rejected_labels": [-100, 8], "ref_chosen_logps": -1.5, "ref_rejected_logps": -2.5},
        {"chosen_input_ids": [9], "chosen_labels": [9], "rejected_input_ids": [9, 10, 11, 12, 13],
         "rejected_labels": [-100, 10, 11, 12, 13], "ref_chosen_logps": -0.5, "ref_rejected_logps": -3.0},
    ]
    batch = PairwiseCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [9, 0, 0, 0, 0], [5, 8, 0, 0, 0], [9, 10, 11, 12, 13]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1] * 5]
    assert batch["labels"][0].tolist() == [-100, 6, 7, -100, -100]
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -0.5]
    assert batch["ref_rejected_logps"].tolist() == [-2.5, -3.0]


def test_feedback_collator():
    features = [
        {"input_ids": [1, 2], "labels": [-100, 2], "kl_input_ids": [1, 3, 4], "kl_labels": [-100, 3, 4], "kto_tag": True},
        {"input_ids": [5], "labels": [5], "kl_input_ids": [5, 2], "kl_labels": [-100, 2], "kto_tag": False},
    ]
    batch = FeedbackCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[1, 2], [5, 0]]
    assert batch["kl_input_ids"].tolist() == [[1, 3, 4], [5, 2, 0]]
    assert batch["kl_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["kto_tags"].tolist() == [True, False]
    assert batch["kto_tags"].dtype == torch.bool


def test_llamafactory_dpo_and_kto_entries_load_unchanged(tmp_path):
    # The dataset_info.json entries of LLaMA-Factory's dpo_en_demo and kto_en_demo, with records in their shape.
    dpo = [{"conversations": [{"from": "human", "value": f"Question {i}?"}],
            "chosen": {"from": "gpt", "value": f"Good answer {i}."},
            "rejected": {"from": "gpt", "value": f"Bad answer {i}."}} for i in range(4)]
    kto = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}],
            "label": i % 2 == 0} for i in range(4)]
    (tmp_path / "dpo_en_demo.json").write_text(json.dumps(dpo))
    (tmp_path / "kto_en_demo.json").write_text(json.dumps(kto))
    info = {
        "dpo_en_demo": {"file_name": "dpo_en_demo.json", "ranking": True, "formatting": "sharegpt",
                        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
        "kto_en_demo": {"file_name": "kto_en_demo.json", "formatting": "sharegpt",
                        "columns": {"messages": "messages", "kto_tag": "label"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    pairs, drops = load_conversations(["dpo_en_demo"], str(tmp_path), stage="dpo")
    pair = pair_from_dict(pairs[2])
    assert (pair.prompt.messages[-1].content, pair.chosen.content, pair.rejected.content) == (
        "Question 2?", "Good answer 2.", "Bad answer 2.")
    feedback, _ = load_conversations(["kto_en_demo"], str(tmp_path), stage="kto")
    assert feedback["kto_tag"] == [True, False, True, False]
    assert feedback[1]["messages"][-1]["content"] == "A1"
