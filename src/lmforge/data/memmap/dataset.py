"""Memmap token shards -> fixed-length training chunks, in a global order fixed by (seed, epoch).

As in OLMo's MemMapDataset, each shard is cut into `chunk_len` consecutive tokens; the tail of a shard
shorter than one chunk is not trained on (counted and logged). With `isolate_documents`, a chunk carries the
lengths of the document pieces it holds, so the collator restarts position_ids at every document and the
attention backend keeps attention inside each document (the sft packing path), and the first token of each
document after the first is not predicted from the previous document.

Order: epoch e visits the chunks in `global_order(n, seed, e)`, a permutation that depends on nothing else,
so a resumed run sees exactly the remaining chunks. Sharding across ranks is accelerate's (batch i of the
global order goes to rank i mod world) and across dataloader workers torch's (whole batches per worker);
`tests/data/test_memmap.py` checks both cover every chunk exactly once per epoch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

from lmforge.data.memmap.writer import FORMAT, FORMAT_VERSION, META_FILE
from lmforge.errors import DataError
from lmforge.logging import get_logger
from lmforge.types import IGNORE_INDEX

logger = get_logger(__name__)


class TokenShards:
    """The shards of one `lmforge tokenize` output directory, opened read-only on first use per process."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            hint = " (an interrupted `lmforge tokenize` leaves no meta.json; run it again)" if self.directory.is_dir() else ""
            raise DataError(f"memmap: {self.directory} has no {META_FILE}{hint}")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"memmap: {meta_path}: not valid JSON ({exc}); tokenize the corpus again") from None
        check_meta(self.meta, meta_path)
        self.dtype = np.dtype(self.meta["dtype"])
        self.shard_tokens = [int(s["num_tokens"]) for s in self.meta["shards"]]
        for shard, expected in zip(self.meta["shards"], self.shard_tokens):
            path = self.directory / shard["tokens"]
            size = path.stat().st_size if path.is_file() else -1
            if size != expected * self.dtype.itemsize:
                raise DataError(
                    f"memmap: {path} should hold {expected:,} tokens ({expected * self.dtype.itemsize:,} bytes) "
                    f"but {'is missing' if size < 0 else f'has {size:,} bytes'}; tokenize the corpus again"
                )
        self._tokens: list[np.memmap] | None = None
        self._ends: list[np.ndarray] | None = None

    @property
    def num_tokens(self) -> int:
        return sum(self.shard_tokens)

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self.meta.get("tokenizer", {}).get("fingerprint")

    def tokens(self, shard: int) -> np.memmap:
        if self._tokens is None:
            self._tokens = [
                np.memmap(self.directory / s["tokens"], dtype=self.dtype, mode="r", shape=(n,))
                for s, n in zip(self.meta["shards"], self.shard_tokens)
            ]
        return self._tokens[shard]

    def document_ends(self, shard: int) -> np.ndarray:
        if self._ends is None:
            self._ends = [np.fromfile(self.directory / s["index"], dtype=np.uint64).astype(np.int64)
                          for s in self.meta["shards"]]
        return self._ends[shard]

    def __getstate__(self):  # dataloader workers re-open the maps instead of pickling their contents
        state = dict(self.__dict__)
        state["_tokens"] = state["_ends"] = None
        return state


_TOKEN_DTYPES = ("uint16", "uint32")


def check_meta(meta: Any, meta_path: Path) -> None:
    """Raise a DataError naming the first field of a meta.json that is missing or of the wrong kind.

    Everything the reader uses is checked here, once, so a damaged or hand-edited meta.json never surfaces
    as a KeyError deep in training.
    """
    def bad(field: str, problem: str) -> DataError:
        return DataError(f"memmap: {meta_path}: field '{field}' {problem}; this meta.json was not written by "
                         "`lmforge tokenize` or has been damaged: tokenize the corpus again")

    if not isinstance(meta, dict):
        raise DataError(f"memmap: {meta_path}: expected a JSON object, got {type(meta).__name__}; tokenize the "
                        "corpus again")
    for field, expected in (("format", FORMAT), ("version", FORMAT_VERSION)):
        if field not in meta:
            raise bad(field, "is missing")
        if meta[field] != expected:
            raise DataError(f"memmap: {meta_path} is not an {FORMAT} v{FORMAT_VERSION} directory ('{field}' is "
                            f"{meta[field]!r}); tokenize the corpus with this lmforge version")
    if "dtype" not in meta:
        raise bad("dtype", "is missing")
    if meta["dtype"] not in _TOKEN_DTYPES:
        raise bad("dtype", f"is {meta['dtype']!r}, not one of {', '.join(_TOKEN_DTYPES)}")
    tokenizer = meta.get("tokenizer")
    if not isinstance(tokenizer, dict):
        raise bad("tokenizer", "is missing" if tokenizer is None else "is not an object")
    for key in ("vocab_size", "eos_token_id"):
        if key not in tokenizer:
            raise bad(f"tokenizer.{key}", "is missing")
    shards = meta.get("shards")
    if not isinstance(shards, list):
        raise bad("shards", "is missing" if shards is None else "is not a list")
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            raise bad(f"shards[{i}]", "is not an object")
        for key, kind in (("tokens", str), ("index", str), ("num_tokens", int)):
            if key not in shard:
                raise bad(f"shards[{i}].{key}", "is missing")
            if not isinstance(shard[key], kind) or isinstance(shard[key], bool):
                raise bad(f"shards[{i}].{key}", f"is {shard[key]!r}, not {'text' if kind is str else 'a whole number'}")


class MemmapChunks(Dataset):
    """Fixed-length chunks of `chunk_len` tokens over one or more shard directories."""

    def __init__(self, directories: list[str | Path], chunk_len: int, *, isolate_documents: bool = False):
        if chunk_len < 2:
            raise DataError(f"memmap: cutoff_len must be at least 2 tokens, got {chunk_len}")
        self.sources = [TokenShards(d) for d in directories]
        fingerprints = {s.tokenizer_fingerprint for s in self.sources}
        if len(fingerprints) > 1:
            raise DataError(
                "memmap: the shard directories were tokenized with different tokenizers: "
                + ", ".join(str(s.directory) for s in self.sources)
            )
        self.chunk_len, self.isolate_documents = chunk_len, isolate_documents
        # (source, shard) of every shard in order, and the first global chunk index of each
        self._shards = [(i, j) for i, s in enumerate(self.sources) for j in range(len(s.shard_tokens))]
        chunks = [self.sources[i].shard_tokens[j] // chunk_len for i, j in self._shards]
        self._first_chunk = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)
        self.num_tokens = sum(s.num_tokens for s in self.sources)
        self.dropped_tokens = self.num_tokens - len(self) * chunk_len
        if len(self) == 0:
            raise DataError(
                f"memmap: {', '.join(str(d) for d in directories)} hold {self.num_tokens:,} tokens, "
                f"less than one chunk of cutoff_len {chunk_len} per shard"
            )
        logger.info(
            "memmap: %s chunks of %d tokens from %s tokens in %d shard(s); %s tokens of shard tails unused",
            f"{len(self):,}", chunk_len, f"{self.num_tokens:,}", len(self._shards), f"{self.dropped_tokens:,}",
        )

    def __len__(self) -> int:
        return int(self._first_chunk[-1])

    def locate(self, index: int) -> tuple[int, int, int]:
        """(source, shard, first token) of global chunk `index`."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        position = int(np.searchsorted(self._first_chunk, index, side="right")) - 1
        source, shard = self._shards[position]
        return source, shard, (index - int(self._first_chunk[position])) * self.chunk_len

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, shard, start = self.locate(index)
        shards = self.sources[source]
        ids = np.asarray(shards.tokens(shard)[start : start + self.chunk_len], dtype=np.int64)
        where = f"{shards.directory / shards.meta['shards'][shard]['tokens']}[{start}:{start + self.chunk_len}]"
        example: dict[str, Any] = {"input_ids": ids, "labels": ids, "_source": where}
        if self.isolate_documents:
            lengths = self._piece_lengths(shards.document_ends(shard), start)
            labels = ids.copy()
            labels[np.cumsum(lengths)[:-1]] = IGNORE_INDEX  # a document's first token has no context
            example.update(labels=labels, sequence_lengths=lengths)
        return example

    def _piece_lengths(self, ends: np.ndarray, start: int) -> list[int]:
        stop = start + self.chunk_len
        lo, hi = np.searchsorted(ends, [start, stop], side="right")
        cuts = [start, *ends[lo:hi].tolist()]
        if cuts[-1] != stop:
            cuts.append(stop)
        return [b - a for a, b in zip(cuts, cuts[1:]) if b > a]


def global_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The chunk order of `epoch`: a permutation fixed by (seed, epoch) alone."""
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(size)


class EpochPermutationSampler(Sampler[int]):
    """Yields `global_order(size, seed, epoch)`, cut to whole global batches.

    The `size mod global_batch` chunks at the end of each epoch's order are left out (a different few each
    epoch, as in OLMo), so that accelerate's split over ranks never repeats a chunk to even out the last
    batch. The Trainer calls `set_epoch` at the start of every epoch.
    """

    def __init__(self, size: int, seed: int, global_batch: int = 1):
        self.size, self.seed, self.epoch = size, seed, 0
        self.global_batch = max(1, global_batch)
        self.length = size - size % self.global_batch
        if self.length == 0:
            raise DataError(f"memmap: {size} chunks are fewer than one global batch of {self.global_batch}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(global_order(self.size, self.seed, self.epoch)[: self.length].tolist())

    def __len__(self) -> int:
        return self.length


def build_memmap_data(data_args, tokenizer):
    """Train (and held-out) chunks of `memmap_path` / `eval_memmap_path`, checked against the model's tokenizer."""
    from lmforge.data.pipeline import TokenizedData

    train = MemmapChunks(data_args.memmap_dirs, data_args.cutoff_len, isolate_documents=data_args.isolate_documents)
    held_out = None
    if data_args.eval_memmap_dirs:
        held_out = MemmapChunks(
            data_args.eval_memmap_dirs, data_args.cutoff_len, isolate_documents=data_args.isolate_documents
        )
    for chunks in filter(None, (train, held_out)):
        for shards in chunks.sources:
            _check_tokenizer(shards, tokenizer)
    return TokenizedData(train=train, eval=held_out)


def _check_tokenizer(shards: TokenShards, tokenizer) -> None:
    written = shards.meta.get("tokenizer", {})
    ours = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id}
    differing = [k for k, v in ours.items() if written.get(k) != v]
    if differing:
        raise DataError(
            f"memmap: {shards.directory} was tokenized with {written.get('path')} "
            f"({', '.join(f'{k} {written.get(k)}' for k in differing)}), but the model's tokenizer has "
            f"{', '.join(f'{k} {ours[k]}' for k in differing)}; tokenize the corpus with this model's tokenizer"
        )
