"""Read data files into lists of records (dicts), with errors that name the file and line.

    paths = list_data_files("alpaca_en_demo.json", Path("data"), dataset="alpaca_en_demo", source=None)
    records = read_records(paths[0])        # [{"instruction": ..., "input": ..., "output": ...}, ...]
    file_fingerprint(paths)                 # sha256 of the contents, for the tokenized-dataset cache

Supported: json (a list of records, or one record per line), jsonl, csv, parquet, txt (one {"text": line}
record per non-empty line) and arrow. We read files ourselves rather than through `datasets.load_dataset`
so a broken record is reported by line number, and nothing is written to the Hugging Face cache.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
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


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of one data file, in file order.

    Raises:
        DataError: The file is missing, unreadable, or a record is malformed (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; check the path (relative paths start at dataset_dir)")
    kind = _kind(path, str(path))
    if kind in ("json", "jsonl"):
        return _read_json(path, allow_array=kind == "json")
    if kind == "txt":
        with path.open(encoding="utf-8") as f:
            return [{"text": line.rstrip("\r\n")} for line in f if line.strip()]
    if kind == "csv":
        return _read_csv(path)
    return _read_arrow_table(path, kind).to_pylist()


def peek_record(path: str | Path) -> dict[str, Any] | None:
    """The first record of a file, reading no more than needed where the format allows."""
    path = Path(path)
    kind = _kind(path, str(path))
    if kind in ("jsonl", "json"):
        with path.open(encoding="utf-8") as f:
            head = f.read(1)
            while head and head.isspace():
                head = f.read(1)
            if head == "{":  # JSON lines: the first non-blank line is the first record
                first = head + f.readline()
                try:
                    return json.loads(first)
                except json.JSONDecodeError:
                    pass  # a pretty-printed object spanning lines; fall through to a full read
    if kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
            rows = batch.to_pylist()
            return rows[0] if rows else None
        return None
    records = read_records(path)
    return records[0] if records else None


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


def _read_json(path: Path, allow_array: bool) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark from Windows editors
    if allow_array and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of records")
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(f"{path}: record {i} is {type(record).__name__}, expected an object")
        return records
    if allow_array and _is_single_object(text):
        raise DataError(
            f"{path}: holds one JSON object; expected a list of records ([{{...}}, {{...}}]) or one record per line"
        )
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path.name} line {lineno}: invalid JSON ({err.msg} at column {err.colno}) in {path}"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{path.name} line {lineno}: expected a JSON object, got {type(record).__name__} in {path}")
        records.append(record)
    return records


def _is_single_object(text: str) -> bool:
    """True for a file holding exactly one (possibly pretty-printed) JSON object rather than JSON lines."""
    stripped = text.strip()
    if "\n" not in stripped:
        return False
    try:
        return isinstance(json.loads(stripped), dict)
    except json.JSONDecodeError:
        return False


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        try:
            records = []
            for row in reader:
                if None in row:  # more cells than header names
                    raise DataError(f"{path.name} line {reader.line_num}: more cells than columns in {path}")
                records.append(dict(row))
        except csv.Error as err:
            raise DataError(f"{path.name} line {reader.line_num}: invalid CSV ({err}) in {path}") from None
    return records


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
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {path} as {kind}: {err}") from None
