"""Corpus files -> batches of raw documents, read lazily: the input side of `lmforge tokenize`.

.txt / .text / .md: one document per non-blank line; .jsonl / .json / .ndjson: one JSON object per line, parsed
later in the tokenizing workers (so parsing scales with them); .gz variants of both; .parquet: one row group
at a time, the text column only. Each document keeps its line (or row) number for error messages.
"""

from __future__ import annotations

import glob
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.sources import text_problem
from lmforge.errors import DataError

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Batch:
    """Up to `batch_size` documents of one file: raw JSON lines or texts, with their line numbers."""

    path: str
    kind: str  # "json" (raw lines, parsed in the worker) or "text"
    items: list[str]
    lines: list[int]
    read_bytes: int = 0  # bytes of the file on disk (compressed, for .gz) read through this batch: the bar's ETA


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named by paths or globs, in the order given (each glob sorted), without repeats."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise DataError(f"tokenize: no file matches '{pattern}'")
        for m in matches:
            path = Path(m).resolve()
            _kind(path)  # fail early on an unsupported suffix
            if path not in files:
                files.append(path)
    return files


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(".parquet") and not path.name.lower().endswith(".gz"):
        return "parquet"
    raise DataError(
        f"tokenize: {path}: unsupported file type; use .txt (one document per line), .jsonl / .json "
        f"(one JSON object per line; .gz allowed) or .parquet"
    )


def iter_batches(files: list[Path], text_key: str, batch_size: int) -> Iterator[Batch]:
    """Documents of every file in order, `batch_size` at a time; blank lines are not documents.

    Raises:
        DataError: a file is damaged (gzip, parquet), not UTF-8 text (naming the line), or binary.
    """
    for path in files:
        kind = _kind(path)
        try:
            if kind == "parquet":
                yield from _parquet_batches(path, text_key, batch_size)
            else:
                yield from _text_batches(path, kind, batch_size)
        except EOFError:  # what gzip raises for a stream cut short
            raise DataError(f"tokenize: {path}: the gzip data ends early (the file is truncated); "
                            "compress or copy it again") from None
        except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            what = "not gzip-compressed data" if isinstance(exc, gzip.BadGzipFile) else "cannot be read"
            raise DataError(f"tokenize: {path}: {what} ({exc})") from None


def _text_batches(path: Path, kind: str, batch_size: int) -> Iterator[Batch]:
    items: list[str] = []
    lines: list[int] = []
    compressed = path.name.lower().endswith(".gz")
    with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
        # Checked before any line: UTF-16, gzip under a plain name and binary files are whole-file problems.
        on_disk = handle.fileobj if compressed else handle  # gzip's tell() counts uncompressed bytes
        problem = text_problem(handle.peek(8192)[:8192])
        if problem:
            raise DataError(f"tokenize: {path}: {problem}")
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"tokenize: {path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                f"column {exc.start + 1}); save the file as UTF-8") from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark from Windows editors
            if not line.strip():
                continue
            items.append(line.rstrip("\r\n") if kind == "text" else line)
            lines.append(number)
            if len(items) == batch_size:
                yield Batch(str(path), kind, items, lines, on_disk.tell())
                items, lines = [], []
    if items:
        yield Batch(str(path), kind, items, lines, path.stat().st_size)


def _parquet_batches(path: Path, text_key: str, batch_size: int) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        yield from _parquet_rows(pq.ParquetFile(path), path, text_key, batch_size)
    except pa.ArrowException as exc:  # not parquet, truncated, or a damaged page
        empty = " (the file is empty)" if path.stat().st_size == 0 else ""
        raise DataError(f"tokenize: {path}: not a readable parquet file{empty} ({exc})") from None


def _parquet_rows(parquet, path: Path, text_key: str, batch_size: int) -> Iterator[Batch]:
    if text_key not in parquet.schema_arrow.names:
        raise DataError(
            f"tokenize: {path}: no column '{text_key}' (columns: {', '.join(parquet.schema_arrow.names)}); "
            "pass --text-key"
        )
    row, rows, size = 0, max(1, parquet.metadata.num_rows), path.stat().st_size
    for record_batch in parquet.iter_batches(batch_size=batch_size, columns=[text_key]):
        texts = record_batch.column(0).to_pylist()
        row += len(texts)
        yield Batch(str(path), "text", [t if isinstance(t, str) else "" for t in texts],
                    list(range(row - len(texts) + 1, row + 1)), size * row // rows)
