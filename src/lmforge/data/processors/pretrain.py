"""Documents -> Examples for pretraining.

Each document ends with eos so the model learns where texts stop. With packing, all documents are one
token stream cut into `cutoff_len` blocks; the last, shorter block is kept (padded later, its padding
unlabelled), so no token of the corpus is lost and none is overwritten. Without packing each document is
truncated to `cutoff_len` on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lmforge.types import Example


def tokenize_documents(texts: list[str], tokenizer, add_bos: bool) -> list[list[int]]:
    """Token ids of each text followed by eos (and preceded by bos when the model family uses one)."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    return [bos + ids + [tokenizer.eos_token_id] for ids in encoded]


def truncate_documents(docs: Iterable[list[int]], cutoff_len: int) -> Iterator[Example]:
    for ids in docs:
        ids = ids[:cutoff_len]
        yield Example(input_ids=ids, attention_mask=[1] * len(ids), labels=list(ids))


def pack_documents(docs: Iterable[list[int]], cutoff_len: int) -> Iterator[Example]:
    """Cut the concatenation of all documents into blocks of `cutoff_len`, keeping the tail."""
    buffer: list[int] = []
    for ids in docs:
        buffer.extend(ids)
        start = 0
        while len(buffer) - start >= cutoff_len:
            block = buffer[start : start + cutoff_len]
            start += cutoff_len
            yield Example(input_ids=block, attention_mask=[1] * cutoff_len, labels=list(block))
        del buffer[:start]
    if buffer:
        yield Example(input_ids=buffer, attention_mask=[1] * len(buffer), labels=list(buffer))
