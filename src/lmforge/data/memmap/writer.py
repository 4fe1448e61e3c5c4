"""Corpus -> memory-mapped token shards: what `lmforge tokenize` writes and `memmap/dataset.py` reads.

Layout of an output directory (OLMo / nanoGPT style; raw arrays so `np.memmap` reads them with no parsing):

    shard_00000.bin   token ids of one shard, documents back to back, uint16 when the vocabulary fits
    shard_00000.idx   uint64 end offset of every document in that shard (document i = ends[i-1]:ends[i])
    meta.json         dtype, tokenizer (path, fingerprint, vocab size, eos id), per-shard token and document
                      counts, totals, sources, dropped documents by reason; written last, so a directory
                      without it is an interrupted run and is never read

Reading streams (`reading.py`): files are read line by line (or parquet row group by row group), and at most
`2 x workers` batches of documents are in flight, so memory stays bounded by the batch size whatever the
corpus size. Batches are tokenized in worker processes (JSON parsing included) and written in input order,
so the shards are byte-identical for any number of workers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.memmap.reading import Batch, expand_inputs, iter_batches
from lmforge.errors import ConfigError, DataError
from lmforge.logging import get_logger

logger = get_logger(__name__)

META_FILE = "meta.json"
FORMAT = "lmforge-memmap"
FORMAT_VERSION = 1


@dataclass
class Encoded:
    tokens: np.ndarray  # all documents of the batch back to back (uint32)
    lengths: np.ndarray  # tokens per kept document
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> "file:line" of each dropped one
    error: str | None = None


# --- workers ------------------------------------------------------------------------------------------

_worker_tokenizer = None
_worker_settings: dict[str, Any] = {}


def _init_worker(tokenizer_dir: str, text_key: str, append_eos: bool) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism; no nested threads
    from transformers import AutoTokenizer

    _set_worker(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True), text_key, append_eos)


def _set_worker(tokenizer, text_key: str, append_eos: bool) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer
    _worker_settings.update(text_key=text_key, append_eos=append_eos)


def encode_batch(batch: Batch) -> Encoded:
    text_key, append_eos = _worker_settings["text_key"], _worker_settings["append_eos"]
    texts: list[str] = []
    dropped: dict[str, list[str]] = {}
    for item, line in zip(batch.items, batch.lines):
        where = f"{batch.path}:{line}"
        if batch.kind == "json":
            try:
                record = json.loads(item)
            except json.JSONDecodeError as exc:
                return _failed(f"{where}: invalid JSON ({exc.msg})")
            if not isinstance(record, dict) or text_key not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                return _failed(f"{where}: no '{text_key}' field (found: {keys}); pass --text-key")
            item = record[text_key]
            if not isinstance(item, str):
                dropped.setdefault("text is not a string", []).append(where)
                continue
        if not item.strip():
            dropped.setdefault("empty text", []).append(where)
            continue
        texts.append(item)
    ids = _tokenize(texts)
    eos = _worker_tokenizer.eos_token_id
    if append_eos:
        ids = [x + [eos] for x in ids]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter((t for x in ids for t in x), dtype=np.uint32, count=int(lengths.sum()))
    return Encoded(tokens, lengths, dropped)


def _failed(error: str) -> Encoded:
    return Encoded(np.empty(0, np.uint32), np.empty(0, np.int64), error=error)


def _tokenize(texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    backend = getattr(_worker_tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: the same ids, without per-call Python overhead
        return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
    return _worker_tokenizer(texts, add_special_tokens=False)["input_ids"]


# --- output -------------------------------------------------------------------------------------------


class ShardWriter:
    """Appends documents to shard_NNNNN.bin / .idx, starting a new shard once `shard_tokens` is reached."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int):
        self.directory, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._file = None
        self._ends: list[int] = []
        self._tokens = 0

    def write(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        start = 0
        for length in lengths.tolist():  # documents never straddle two shards
            if self._file is None:
                self._open()
            self._file.write(tokens[start : start + length].astype(self.dtype, copy=False).tobytes())
            start += length
            self._tokens += length
            self._ends.append(self._tokens)
            if self._tokens >= self.shard_tokens:
                self._close()

    def finish(self) -> list[dict[str, Any]]:
        if self._file is not None:
            self._close()
        return self.shards

    def _open(self) -> None:
        name = f"shard_{len(self.shards):05d}"
        self._file = open(self.directory / f"{name}.bin", "wb")
        self._name, self._ends, self._tokens = name, [], 0

    def _close(self) -> None:
        self._file.close()
        self._file = None
        np.asarray(self._ends, dtype=np.uint64).tofile(self.directory / f"{self._name}.idx")
        self.shards.append(
            {"tokens": f"{self._name}.bin", "index": f"{self._name}.idx",
             "num_tokens": self._tokens, "num_documents": len(self._ends)}
        )


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenizeResult:
    num_tokens: int
    num_documents: int
    num_shards: int
    seconds: float
    dropped: dict[str, int]

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds else 0.0


def tokenize_corpus(
    inputs: list[str],
    tokenizer_dir: str | Path,
    output_dir: str | Path,
    *,
    text_key: str = "text",
    workers: int | None = None,
    batch_size: int = 256,
    shard_tokens: int = 1 << 30,
    append_eos: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> TokenizeResult:
    """Tokenize `inputs` (paths or globs of .txt / .jsonl[.gz] / .parquet) into memmap shards in `output_dir`."""
    from transformers import AutoTokenizer

    from lmforge.data.cache import tokenizer_fingerprint

    for option, value in (("--batch-size", batch_size), ("--shard-tokens", shard_tokens), ("--workers", workers)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"tokenize: {option} must be a whole number of at least 1, got {value!r}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"tokenize: --output {output_dir} is a file; give a directory (it is created when missing)")
    files = expand_inputs(inputs)
    tokenizer_dir = Path(tokenizer_dir).resolve()
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"tokenize: --tokenizer {tokenizer_dir}: no tokenizer transformers can load ({exc})") from exc
    if append_eos and tokenizer.eos_token_id is None:
        raise DataError(f"tokenize: the tokenizer in {tokenizer_dir} has no eos token; pass --no-eos or add one")
    out = _prepare_output(output_dir, overwrite)
    dtype = token_dtype(len(tokenizer))
    workers = workers or os.cpu_count() or 1

    writer = ShardWriter(out, dtype, shard_tokens)
    dropped: dict[str, int] = {}
    dropped_where: dict[str, list[str]] = {}
    started = time.perf_counter()
    # The bar counts input bytes on disk, the one total known before reading: that gives it an ETA.
    sizes = [f.stat().st_size for f in files]
    file_start = {str(f): sum(sizes[:i]) for i, f in enumerate(files)}
    bar = _progress_bar(progress, sum(sizes))
    num_tokens = num_documents = 0

    def consume(encoded: Encoded, batch: Batch) -> None:
        nonlocal num_tokens, num_documents
        if encoded.error:
            raise DataError(f"tokenize: {encoded.error}")
        writer.write(encoded.tokens, encoded.lengths)
        num_tokens += int(encoded.lengths.sum())
        num_documents += len(encoded.lengths)
        for reason, where in encoded.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + len(where)
            kept = dropped_where.setdefault(reason, [])
            kept.extend(where[: max(0, 5 - len(kept))])
        if bar is not None:
            bar.update(file_start[batch.path] + batch.read_bytes - bar.n)
            bar.set_postfix_str(f"{num_tokens:,} tokens, {num_documents:,} docs", refresh=False)

    settings = (str(tokenizer_dir), text_key, append_eos)
    batches = iter_batches(files, text_key, batch_size)
    try:
        if workers == 1:
            _set_worker(tokenizer, text_key, append_eos)  # in this process: the tokenizer loaded above
            for batch in batches:
                consume(encode_batch(batch), batch)
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=settings) as pool:
                in_flight: deque[tuple[Future, Batch]] = deque()
                for batch in batches:
                    in_flight.append((pool.submit(encode_batch, batch), batch))
                    if len(in_flight) >= 2 * workers:
                        future, done = in_flight.popleft()
                        consume(future.result(), done)
                while in_flight:
                    future, done = in_flight.popleft()
                    consume(future.result(), done)
        if bar is not None:
            bar.update(bar.total - bar.n)  # files whose last lines are blank end short of their size
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written output is left to be mistaken for a corpus
        raise
    finally:
        if bar is not None:
            bar.close()
    shards = writer.finish()
    seconds = time.perf_counter() - started

    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dtype": dtype.name,
        "tokenizer": {
            "path": str(tokenizer_dir),
            "fingerprint": tokenizer_fingerprint(tokenizer),
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
        },
        "append_eos": append_eos,
        "text_key": text_key,
        "num_tokens": num_tokens,
        "num_documents": num_documents,
        "shards": shards,
        "sources": [str(f) for f in files],
        "dropped": dropped,
        "dropped_examples": dropped_where,
    }
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / META_FILE)
    if dropped:
        logger.warning(
            "dropped %d documents: %s",
            sum(dropped.values()),
            "; ".join(f"{n} {reason} (e.g. {', '.join(dropped_where[reason][:3])})" for reason, n in dropped.items()),
        )
    result = TokenizeResult(num_tokens, num_documents, len(shards), seconds, dropped)
    logger.info(
        "wrote %s tokens (%s) in %s documents to %d shard(s) in %s: %.1f s, %s tokens/s with %d worker(s)",
        f"{num_tokens:,}", dtype.name, f"{num_documents:,}", len(shards), out, seconds,
        f"{result.tokens_per_second:,.0f}", workers,
    )
    return result


def _prepare_output(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"tokenize: --output {out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _progress_bar(enabled: bool, total_bytes: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="tokenizing",
                mininterval=1.0, dynamic_ncols=True)


def tokenize_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lmforge tokenize",
        description="Tokenize text / jsonl / parquet files into memmap token shards for pretraining "
        "(dataset_format: memmap).",
    )
    parser.add_argument("inputs", nargs="+", help="files or globs: .txt (a document per line), .jsonl[.gz], .parquet")
    parser.add_argument("--tokenizer", required=True, help="local tokenizer or model directory")
    parser.add_argument("--output", required=True, help="directory for the shards and meta.json")
    parser.add_argument("--text-key", default="text", help="JSON field / parquet column holding the text")
    parser.add_argument("--workers", type=int, default=None, help="tokenizing processes (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per worker task")
    parser.add_argument("--shard-tokens", type=int, default=1 << 30, help="start a new shard after this many tokens")
    parser.add_argument("--no-eos", dest="append_eos", action="store_false", help="do not end documents with eos")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    result = tokenize_corpus(
        args.inputs, args.tokenizer, args.output, text_key=args.text_key, workers=args.workers,
        batch_size=args.batch_size, shard_tokens=args.shard_tokens, append_eos=args.append_eos,
        overwrite=args.overwrite, progress=not args.quiet,
    )
    print(
        f"{result.num_tokens:,} tokens, {result.num_documents:,} documents, {result.num_shards} shard(s) in "
        f"{result.seconds:.1f} s ({result.tokens_per_second:,.0f} tokens/s) -> {args.output}"
    )
    return 0
