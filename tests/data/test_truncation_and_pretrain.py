"""Budget sharing (LLaMA-Factory's infer_seqlen rule), pretraining blocks, padding collator."""

import pytest

from lmforge.data.collators import Collator
from lmforge.data.processors.pretrain import pack_documents, truncate_documents
from lmforge.data.processors.truncation import share_budget
from lmforge.types import IGNORE_INDEX


@pytest.mark.parametrize(
    "prompt, response, budget, expected",
    [
        (10, 10, 100, (10, 10)),  # everything fits
        (900, 100, 512, (412, 100)),  # short response kept whole, prompt cut
        (100, 900, 512, (100, 412)),  # short prompt kept whole, response cut
        (600, 400, 512, (308, 204)),  # both long: in proportion, int(512 * 0.4) = 204
        (300, 300, 512, (256, 256)),
        (1000, 1, 512, (511, 1)),
        (0, 1000, 512, (0, 512)),
        (5, 5, 0, (0, 0)),
    ],
)
def test_share_budget(prompt, response, budget, expected):
    kept = share_budget(prompt, response, budget)
    assert kept == expected
    assert sum(kept) <= max(budget, 0)


def test_pack_keeps_tail_and_every_token():
    docs = [list(range(i * 100, i * 100 + n)) for i, n in enumerate([5, 7, 3, 9])]  # 24 tokens
    blocks = list(pack_documents(docs, cutoff_len=10))
    assert [len(b["input_ids"]) for b in blocks] == [10, 10, 4]
    flat = [t for b in blocks for t in b["input_ids"]]
    assert flat == [t for d in docs for t in d]  # nothing dropped, nothing overwritten, order kept
    assert all(b["labels"] == b["input_ids"] for b in blocks)


def test_pack_long_document_spans_blocks():
    blocks = list(pack_documents([list(range(25))], cutoff_len=10))
    assert [b["input_ids"][0] for b in blocks] == [0, 10, 20]


def test_truncate_documents():
    blocks = list(truncate_documents([list(range(25)), [1, 2]], cutoff_len=10))
    assert blocks[0]["input_ids"] == list(range(10))
    assert blocks[1]["input_ids"] == [1, 2]


def test_padding_collator():
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)(
        [
            {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [IGNORE_INDEX, 6, 7]},
            {"input_ids": [8], "attention_mask": [1], "labels": [8]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX], [8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
