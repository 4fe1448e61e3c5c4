"""Read data files into lists of records (dicts), with errors that name the file and line.

    paths = list_data_files("alpaca_en_demo.json", Path("data"), dataset="alpaca_en_demo", source=None)
    records = read_records(paths[0])        # [{"instruction": ..., "input": ..., "output": ...}, ...]
    file_fingerprint(paths)                 # sha256 of the contents, for the tokenized-dataset cache

Supported: json (a list of records, or one record per line), jsonl, csv, parquet, txt (one {"text": line}
record per non-empty line) and arrow. We read files ourselves rather than through `datasets.load_dataset`
so a broken record is reported by line number, and nothing is written to the Hugging Face cache.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

# Extension -> reader kind. `.json` may hold a JSON list or, as often happens, JSON lines.
SUPPORTED_EXTENSIONS = {
    "json": "json",
    "jsonl": "jsonl",
    "csv": "csv",
    "parquet": "parquet",
    "txt": "txt",
    "arrow": "arrow",
}


def list_data_files(file_name: str, dataset_dir: Path, *, dataset: str, source: str | None) -> list[Path]:
    """The data files behind a `file_name`: the file itself, or the files of a folder, sorted.

    Args:
        file_name: A file or folder, relative to `dataset_dir` (or absolute).
        dataset_dir: The folder `file_name` is relative to.
        dataset: The dataset's name, for error messages.
        source: The dataset_info.json that named the file, for error messages (None for a bare path).

    Raises:
        DataError: The file or folder is missing or empty, or holds an unsupported or mixed file type.
    """
    path = Path(dataset_dir) / file_name
    if path.is_dir():
        # Sorted (LLaMA-Factory takes os.listdir order) so the record order is the same on every machine.
        paths = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not paths:
            raise DataError(f"dataset '{dataset}': folder {path} holds no data files")
    elif path.is_file():
        paths = [path]
    else:
        fix = f"fix 'file_name' in {source}" if source else "check the path"
        raise DataError(
            f"dataset '{dataset}': data file '{file_name}' not found in dataset_dir '{dataset_dir}' "
            f"(looked for {path}); put the file there or {fix}"
        )
    kinds = {_kind(p, dataset) for p in paths}
    if len(kinds) > 1:
        raise DataError(f"dataset '{dataset}': folder {path} mixes file types ({', '.join(sorted(kinds))}); use one")
    return paths


@dataclass(frozen=True)
class LocatedRecord:
    """One record of a file and where it starts, or why the record at that place cannot be read."""

    path: Path
    row: int  # 0-based, in file order
    line: int | None  # 1-based line where the record starts, for text files
    record: dict[str, Any] | None
    error: str | None = None
    in_list: bool = False  # one of the records of a JSON list, whose lines may hold several records
    whole_file: bool = False  # the error is about the file (binary, UTF-16, unreadable), not one record

    @property
    def where(self) -> str:
        """`file:line` for text files (what editors and grep understand), else `file row N`."""
        if self.whole_file:
            return str(self.path)
        if self.line is None:
            return f"{self.path} row {self.row}"
        return f"{self.path}:{self.line} (record {self.row})" if self.in_list else f"{self.path}:{self.line}"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of one data file, in file order.

    Raises:
        DataError: The file is missing, unreadable, or a record is malformed (the message names the line).
    """
    records = []
    for located in scan_records(path):
        if located.error is not None:
            if located.whole_file:
                raise DataError(f"{located.path}: {located.error}")
            where = f"line {located.line}" if located.line is not None else f"row {located.row}"
            raise DataError(f"{located.path.name} {where}: {located.error} in {located.path}")
        records.append(located.record)
    return records


def scan_records(path: str | Path) -> Iterator[LocatedRecord]:
    """Every record of one data file with its place, reading on past broken records where the format allows
    (JSON lines and txt lines, non-UTF-8 ones included; CSV rows); a broken JSON list, CSV quoting or binary
    file ends the scan with one error.

    Raises:
        DataError: The file is missing or of an unsupported type.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; check the path (relative paths start at dataset_dir)")
    kind = _kind(path, str(path))
    if kind in ("parquet", "arrow"):
        try:
            table = _read_arrow_table(path, kind)
        except DataError as err:
            yield LocatedRecord(path, 0, None, None, str(err).removeprefix(f"{path}: "), whole_file=True)
            return
        for row, record in enumerate(table.to_pylist()):
            yield LocatedRecord(path, row, None, record)
        return

    # The one guard every text reader goes through: the bytes are checked and decoded here, never by `open`.
    data = path.read_bytes()
    problem = text_problem(data[:_SNIFF_BYTES])
    if problem:
        yield LocatedRecord(path, 0, None, None, problem, whole_file=True)
        return
    data = data.removeprefix(codecs.BOM_UTF8)  # tolerate a byte-order mark from Windows editors
    try:
        text: str | None = data.decode("utf-8")
        bad_byte = None
    except UnicodeDecodeError as err:
        text, bad_byte = None, err
    if kind == "csv" or (kind == "json" and data.lstrip()[:1] == b"["):
        if text is None:  # quoted CSV cells and JSON lists span lines: no record after the bad byte is certain
            line = data.count(b"\n", 0, bad_byte.start) + 1
            yield LocatedRecord(path, 0, line, None, _not_utf8(data, bad_byte))
        elif kind == "csv":
            yield from _scan_csv(path, text)
        else:
            yield from _scan_json_array(path, text)
        return
    if kind == "json" and text is not None and _is_single_object(text):
        yield LocatedRecord(path, 0, 1, None, "holds one JSON object; expected a list of records ([{...}, {...}]) "
                            "or one record per line")
        return
    lines = _lines(data, text)
    yield from (_scan_txt(path, lines) if kind == "txt" else _scan_json_lines(path, lines))


_SNIFF_BYTES = 8192
_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def text_problem(head: bytes) -> str | None:
    """Why a file starting with `head` cannot be UTF-8 text, or None when it may be.

    Catches what a UTF-8 decoder reports only as a bad byte somewhere: UTF-16/32 text (what Windows tools
    often write), gzip-compressed files under a plain name, and binary files (NUL bytes never occur in text).
    """
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return f"not UTF-8 text: {encoding} (save it as UTF-8, e.g. `iconv -f {encoding} -t UTF-8`)"
    if head.startswith(b"\x1f\x8b"):
        return "not text: gzip-compressed (decompress it first, e.g. `gunzip -k`)"
    if b"\x00" in head:
        if len(head) >= 16 and max(head[0::2].count(0), head[1::2].count(0)) > len(head) // 4:
            return "not UTF-8 text: UTF-16 without a byte-order mark (save it as UTF-8, e.g. `iconv -f UTF-16LE`)"
        return "not text: a binary file (it holds NUL bytes)"
    return None


def _not_utf8(data: bytes, err: UnicodeDecodeError) -> str:
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return f"not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}; save the file as UTF-8)"


def _lines(data: bytes, text: str | None) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text or None, error or None) of each line; lines split at "\\n" as editors count them.

    When the whole file decodes, its text is split; otherwise each line is decoded on its own, so one bad line
    is reported by number and the others still read.
    """
    if text is not None:
        for number, line in enumerate(text.split("\n"), start=1):
            yield number, line.removesuffix("\r"), None
        return
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            yield number, raw.decode("utf-8").removesuffix("\r"), None
        except UnicodeDecodeError as err:
            yield number, None, _not_utf8(raw, err)


def _scan_txt(path: Path, lines) -> Iterator[LocatedRecord]:
    row = 0
    for lineno, line, error in lines:
        if error is not None:
            yield LocatedRecord(path, row, lineno, None, error)
        elif line.strip():
            yield LocatedRecord(path, row, lineno, {"text": line})
        else:
            continue
        row += 1


def peek_record(path: str | Path) -> dict[str, Any] | None:
    """The first readable record of a file (None when there is none), reading no more than needed where the
    format allows. Problems are left for the full read to report, with their line numbers."""
    path = Path(path)
    kind = _kind(path, str(path))
    if kind in ("jsonl", "json"):
        with path.open("rb") as f:
            head = f.read(1)
            while head and head.isspace():
                head = f.read(1)
            if head == b"{":  # JSON lines: the first non-blank line is the first record
                try:
                    record = json.loads((head + f.readline()).decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    record = None  # a pretty-printed object spanning lines, or a bad line: the full scan decides
                if isinstance(record, dict):
                    return record
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
                rows = batch.to_pylist()
                return rows[0] if rows else None
            return None
        except (pa.ArrowException, OSError):
            pass  # not parquet after all: the scan below reports nothing readable, the full read says why
    return next((located.record for located in scan_records(path) if located.error is None), None)


def file_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over the names and contents of `paths`, read in 1 MiB chunks (big corpora never sit in memory)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        # Name and size delimit the files, so moving bytes from one file to the next changes the hash.
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _kind(path: Path, dataset: str) -> str:
    ext = path.suffix.lstrip(".").lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"dataset '{dataset}': cannot read {path}: unsupported file type '.{ext}'; "
            f"use one of: {', '.join('.' + e for e in SUPPORTED_EXTENSIONS)}"
        )
    return SUPPORTED_EXTENSIONS[ext]


def _scan_json_lines(path: Path, lines) -> Iterator[LocatedRecord]:
    row = 0
    for lineno, line, error in lines:
        if error is not None:
            yield LocatedRecord(path, row, lineno, None, error)
            row += 1
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield LocatedRecord(path, row, lineno, None, f"invalid JSON ({err.msg} at column {err.colno})")
        else:
            if isinstance(record, dict):
                yield LocatedRecord(path, row, lineno, record)
            else:
                yield LocatedRecord(path, row, lineno, None, f"expected a JSON object, got {type(record).__name__}")
        row += 1


def _scan_json_array(path: Path, text: str) -> Iterator[LocatedRecord]:
    """Records of a JSON list one at a time, each with the line it starts on."""
    decoder = json.JSONDecoder()
    position, line, counted_to = text.index("[") + 1, 1, 0
    row = 0
    while True:
        position = _skip_space(text, position)
        if position < len(text) and text[position] == "]":
            if text[position + 1 :].strip():
                yield LocatedRecord(path, row, _line_at(text, position + 1), None, "text after the end of the list",
                                    True)
            return
        if row and text[position : position + 1] == ",":
            position = _skip_space(text, position + 1)
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            yield LocatedRecord(path, row, err.lineno, None, f"invalid JSON ({err.msg} at column {err.colno})", True)
            return
        if isinstance(record, dict):
            yield LocatedRecord(path, row, line, record, None, True)
        else:
            yield LocatedRecord(path, row, line, None, f"expected a JSON object, got {type(record).__name__}", True)
        position, row = end, row + 1
        following = _skip_space(text, position)
        if following >= len(text) or text[following] not in ",]":
            yield LocatedRecord(path, row, _line_at(text, following), None,
                                "invalid JSON (expected ',' or ']' after a record)", True)
            return


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _is_single_object(text: str) -> bool:
    """True for a file holding exactly one (possibly pretty-printed) JSON object rather than JSON lines."""
    stripped = text.strip()
    if "\n" not in stripped:
        return False
    try:
        return isinstance(json.loads(stripped), dict)
    except json.JSONDecodeError:
        return False


def _scan_csv(path: Path, text: str) -> Iterator[LocatedRecord]:
    # strict: an unterminated quote (a file cut short inside a cell) is an error, not a cell running to the end
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    row, start_line = 0, 2  # line 1 holds the header
    try:
        for record in reader:
            if None in record:  # more cells than header names
                yield LocatedRecord(path, row, start_line, None, "more cells than columns")
            elif None in record.values():  # a row cut short, e.g. the last one of a truncated file
                yield LocatedRecord(path, row, start_line, None, "fewer cells than columns")
            else:
                yield LocatedRecord(path, row, start_line, dict(record))
            row, start_line = row + 1, reader.line_num + 1
    except csv.Error as err:
        yield LocatedRecord(path, row, reader.line_num, None, f"invalid CSV ({err})")


def _read_arrow_table(path: Path, kind: str):
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        # `datasets` saves .arrow files in the IPC stream format; others write the file format.
        with pa.memory_map(str(path)) as source:
            try:
                return pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError) as err:
        empty = " (the file is empty)" if path.stat().st_size == 0 else ""
        raise DataError(f"{path}: not a readable {kind} file{empty}: {err}") from None
