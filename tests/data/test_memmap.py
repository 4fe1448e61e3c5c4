"""`lmforge tokenize` shards and the chunk dataset / order that training reads from them."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler, DataLoader, Dataset, get_worker_info
from transformers import AutoTokenizer

from lmforge.data.memmap.dataset import EpochPermutationSampler, MemmapChunks, TokenShards, global_order
from lmforge.data.memmap.writer import tokenize_corpus
from lmforge.errors import DataError
from lmforge.types import IGNORE_INDEX

WORDS = "the a model token learns data shard order seed epoch rank worker chunk memory".split()


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture
def corpus(tmp_path):
    docs = documents(120)
    jsonl = tmp_path / "part1.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[:60])))
    txt = tmp_path / "part2.txt"
    txt.write_text("\n".join(docs[60:90]) + "\n\n")  # the blank line is not a document
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs[90:]}), tmp_path / "part3.parquet", row_group_size=7)
    return tmp_path, docs


def expected_stream(tokenizer, docs) -> list[list[int]]:
    return [tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for d in docs]


def test_tokenize_writes_every_document_in_order(corpus, tiny_model_dir, tmp_path):
    folder, docs = corpus
    out = tmp_path / "shards"
    result = tokenize_corpus(
        [str(folder / "part1.jsonl"), str(folder / "part2.txt"), str(folder / "*.parquet")],
        tiny_model_dir, out, workers=1, batch_size=16, progress=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = expected_stream(tokenizer, docs)
    shards = TokenShards(out)
    assert shards.dtype == np.uint16 and shards.meta["tokenizer"]["vocab_size"] == len(tokenizer)
    assert result.num_documents == 120 == shards.meta["num_documents"]
    assert result.num_tokens == sum(map(len, expected)) == shards.num_tokens
    tokens = np.asarray(shards.tokens(0), dtype=np.int64)
    assert tokens.tolist() == [t for doc in expected for t in doc]
    assert shards.document_ends(0).tolist() == np.cumsum([len(d) for d in expected]).tolist()


def test_workers_and_shard_size_do_not_change_the_tokens(corpus, tiny_model_dir, tmp_path):
    folder, _ = corpus
    inputs = [str(folder / "part*")]
    tokenize_corpus(inputs, tiny_model_dir, tmp_path / "one", workers=1, batch_size=8, progress=False)
    tokenize_corpus(inputs, tiny_model_dir, tmp_path / "two", workers=2, batch_size=8, shard_tokens=300,
                    progress=False)
    one, two = TokenShards(tmp_path / "one"), TokenShards(tmp_path / "two")
    assert len(two.shard_tokens) > 3 and len(one.shard_tokens) == 1
    joined = np.concatenate([np.asarray(two.tokens(i)) for i in range(len(two.shard_tokens))])
    assert joined.tobytes() == np.asarray(one.tokens(0)).tobytes()
    # documents never straddle shards: every shard ends on a document end
    for i, n in enumerate(two.shard_tokens):
        assert two.document_ends(i)[-1] == n
    assert sum(len(two.document_ends(i)) for i in range(len(two.shard_tokens))) == one.meta["num_documents"]


def test_dropped_and_bad_records_are_reported(tmp_path, tiny_model_dir):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a model"}\n{"text": "   "}\n{"text": 3}\n{"text": "data"}\n')
    result = tokenize_corpus([str(good)], tiny_model_dir, tmp_path / "out", workers=1, progress=False)
    assert result.num_documents == 2
    assert result.dropped == {"empty text": 1, "text is not a string": 1}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["dropped_examples"]["empty text"] == [f"{good}:2"]

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: invalid JSON"):
        tokenize_corpus([str(broken)], tiny_model_dir, tmp_path / "o2", workers=1, progress=False)
    assert not (tmp_path / "o2").exists()  # nothing half-written is left behind
    with pytest.raises(DataError, match=r"good.jsonl:1: no 'content' field \(found: text\)"):
        tokenize_corpus([str(good)], tiny_model_dir, tmp_path / "o3", text_key="content", workers=1, progress=False)
    with pytest.raises(DataError, match="no file matches"):
        tokenize_corpus([str(tmp_path / "*.missing")], tiny_model_dir, tmp_path / "o4", progress=False)
    with pytest.raises(DataError, match="not empty; pass --overwrite"):
        tokenize_corpus([str(good)], tiny_model_dir, tmp_path / "out", progress=False)
    (tmp_path / "notes.csv").write_text("x\n")
    with pytest.raises(DataError, match="unsupported file type"):
        tokenize_corpus([str(tmp_path / "notes.csv")], tiny_model_dir, tmp_path / "o5", progress=False)


def test_cli_prints_tokens_per_second_and_fails_cleanly(corpus, tiny_model_dir, tmp_path):
    folder, _ = corpus
    run = [sys.executable, "-m", "lmforge.cli", "tokenize", str(folder / "part1.jsonl"),
           "--tokenizer", str(tiny_model_dir), "--quiet"]
    ok = subprocess.run(run + ["--output", str(tmp_path / "cli")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "60 documents" in ok.stdout and "tokens/s" in ok.stdout
    again = subprocess.run(run + ["--output", str(tmp_path / "cli")], capture_output=True, text=True)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "lmforge: error: tokenize: --output" in again.stderr


@pytest.fixture
def shards_dir(tmp_path, tiny_model_dir):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(80, seed=1)))
    out = tmp_path / "shards"
    tokenize_corpus([str(path)], tiny_model_dir, out, workers=1, shard_tokens=700, progress=False)
    return out


def test_chunks_are_consecutive_tokens_and_shard_tails_are_counted(shards_dir):
    shards = TokenShards(shards_dir)
    chunks = MemmapChunks([shards_dir], chunk_len=64)
    assert len(chunks) == sum(n // 64 for n in shards.shard_tokens)
    assert chunks.dropped_tokens == sum(n % 64 for n in shards.shard_tokens)
    for index in (0, 5, len(chunks) - 1):
        source, shard, start = chunks.locate(index)
        item = chunks[index]
        assert item["input_ids"].tolist() == np.asarray(shards.tokens(shard)[start : start + 64]).tolist()
        assert item["labels"].tolist() == item["input_ids"].tolist()
    with pytest.raises(IndexError):
        chunks.locate(len(chunks))


def test_isolated_chunks_split_at_document_ends(shards_dir):
    chunks = MemmapChunks([shards_dir], chunk_len=64, isolate_documents=True)
    shards = TokenShards(shards_dir)
    for index in range(len(chunks)):
        _, shard, start = chunks.locate(index)
        item = chunks[index]
        lengths = item["sequence_lengths"]
        assert sum(lengths) == 64
        ends = shards.document_ends(shard)
        inner = [e - start for e in ends.tolist() if start < e < start + 64]
        assert np.cumsum(lengths)[:-1].tolist() == inner
        starts = set(inner)
        for t, (tok, lab) in enumerate(zip(item["input_ids"].tolist(), item["labels"].tolist())):
            assert lab == (IGNORE_INDEX if t in starts else tok)


def test_order_is_fixed_by_seed_and_epoch():
    assert global_order(50, 3, 0).tolist() == global_order(50, 3, 0).tolist()
    assert global_order(50, 3, 0).tolist() != global_order(50, 3, 1).tolist()
    assert global_order(50, 3, 0).tolist() != global_order(50, 4, 0).tolist()
    assert sorted(global_order(50, 3, 1).tolist()) == list(range(50))
    sampler = EpochPermutationSampler(50, seed=3, global_batch=8)
    sampler.set_epoch(1)
    assert list(sampler) == global_order(50, 3, 1)[:48].tolist() and len(sampler) == 48


class WhoReads(Dataset):
    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        info = get_worker_info()
        return torch.tensor([index, info.id if info else -1])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_read_disjoint_slices_covering_each_chunk_once(world_size, num_workers):
    size, batch = 96, 4  # 96 = 8 global batches for every world size here
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            sampler = EpochPermutationSampler(size, seed=7, global_batch=batch * world_size)
            sampler.set_epoch(epoch)
            shard = BatchSamplerShard(BatchSampler(sampler, batch, drop_last=False), world_size, rank)
            loader = DataLoader(WhoReads(size), batch_sampler=shard, num_workers=num_workers)
            for rows in loader:
                seen += [(rank, int(w), int(i)) for i, w in rows.tolist()]
        indices = [i for _, _, i in seen]
        assert sorted(indices) == list(range(size))  # every chunk exactly once per epoch
        readers = {(r, w) for r, w, _ in seen}
        assert len(readers) == world_size * max(1, num_workers)  # every rank and worker took part
    # a size that is not a multiple of the global batch: the remainder is left out, nothing repeats
    sampler = EpochPermutationSampler(50, seed=7, global_batch=4 * world_size)
    got = [i for rank in range(world_size)
           for b in BatchSamplerShard(BatchSampler(sampler, 4, drop_last=False), world_size, rank) for i in b]
    assert len(got) == len(set(got)) == 50 - 50 % (4 * world_size)
