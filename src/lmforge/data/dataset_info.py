"""Dataset names -> `DatasetSpec`s, read from a `dataset_info.json` in LLaMA-Factory's schema.

    specs = resolve_datasets(["alpaca_en_demo", "my_data.jsonl"], dataset_dir="data")
    specs[0].paths, specs[0].formatting, specs[0].columns.prompt

A name is either an entry of `<dataset_dir>/dataset_info.json` or a path to a data file (its format is
guessed from its first record, see `infer_spec`). Only the entries asked for are parsed, so a shared
dataset_info.json full of hub datasets still works for its local ones. Entries are checked strictly: a
mistyped key would otherwise silently fall back to a default and train on the wrong column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lmforge.data.formats import FORMATS
from lmforge.data.sources import SUPPORTED_EXTENSIONS, list_data_files, peek_record, text_problem
from lmforge.errors import DataError, did_you_mean
from lmforge.logging import get_logger

logger = get_logger(__name__)

DATASET_INFO = "dataset_info.json"

# Keys LLaMA-Factory accepts that lmforge does not act on: they are read and noted, never an error.
_IGNORED_KEYS = ("subset", "folder")
_REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
_MULTIMODAL_COLUMNS = ("images", "videos", "audios")


@dataclass(frozen=True)
class Columns:
    """Which record field holds each part of a sample (`columns` in dataset_info.json).

    Defaults are LLaMA-Factory's, except that the openai format reads `messages` by default.
    """

    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    system: str | None = None
    tools: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None


@dataclass(frozen=True)
class Tags:
    """How sharegpt/openai messages name their role and content (`tags` in dataset_info.json)."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


# The openai format uses OpenAI's own field and role names unless the entry says otherwise.
OPENAI_TAGS = Tags("role", "content", "user", "assistant", "tool", "function_call", "system")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset to load: where its files are and how to read their records.

    Attributes:
        name: The entry name in dataset_info.json, or the path as given for a bare data file.
        paths: The data files, in read order (a folder `file_name` expands to its files, sorted).
        file_name: `file_name` as written in the entry (relative to `dataset_dir`).
        formatting: alpaca, sharegpt or openai.
        ranking: Preference data (chosen/rejected) rather than single responses.
        columns: Record fields holding each part of a sample.
        tags: Role/content names inside sharegpt/openai messages.
        configured_columns: The `columns` keys the entry set explicitly; each must exist in the file.
        split: `split` from the entry; local files have a single split, so only "train" is meaningful.
        num_samples: Sample this many records (with repetition past the dataset's size).
        source: The dataset_info.json the entry came from, or None for a bare data file.
    """

    name: str
    paths: tuple[str, ...]
    file_name: str
    formatting: str = "alpaca"
    ranking: bool = False
    columns: Columns = field(default_factory=Columns)
    tags: Tags = field(default_factory=Tags)
    configured_columns: tuple[str, ...] = ()
    split: str = "train"
    num_samples: int | None = None
    source: str | None = None


_ENTRY_KEYS = ("file_name", "formatting", "ranking", "columns", "tags", "split", "num_samples")
_COLUMN_KEYS = tuple(f.name for f in fields(Columns))
_TAG_KEYS = tuple(f.name for f in fields(Tags))


def resolve_datasets(names: list[str], dataset_dir: str | None) -> list[DatasetSpec]:
    """The spec of each named dataset, in order.

    Args:
        names: Entries of `<dataset_dir>/dataset_info.json`, or paths to data files.
        dataset_dir: Folder holding dataset_info.json and the files it names (default: current folder).

    Raises:
        DataError: dataset_info.json is missing or malformed, a name is unknown, an entry is invalid or
            names a hub dataset, or a data file is missing.
    """
    base = Path(dataset_dir or ".")
    info_path = base / DATASET_INFO
    info: dict[str, Any] | None = _read_info(info_path) if info_path.is_file() else None
    specs = []
    for name in names:
        if info is not None and name in info:
            specs.append(parse_entry(name, info[name], base, str(info_path)))
        elif _looks_like_file(name, base):
            specs.append(infer_spec(name, base))
        elif info is None:
            raise DataError(
                f"dataset '{name}': no {DATASET_INFO} in dataset_dir '{base}' and no data file by that name; "
                f"set dataset_dir to the folder holding {DATASET_INFO}, or give a path to a data file"
            )
        else:
            raise DataError(
                f"dataset '{name}' is not an entry of {info_path}{did_you_mean(name, info)} "
                f"and no data file by that name exists"
            )
    return specs


def parse_entry(name: str, entry: Any, dataset_dir: Path, source: str) -> DatasetSpec:
    """Validate one dataset_info.json entry and turn it into a `DatasetSpec`."""
    where = f"{source}, entry '{name}'"
    if not isinstance(entry, dict):
        raise DataError(f'{where}: expected an object like {{"file_name": "data.json"}}, got {entry!r}')
    remote = [key for key in _REMOTE_KEYS if key in entry]
    if remote:
        raise DataError(
            f"{where}: '{remote[0]}' points at a remote dataset, but lmforge loads local files only; "
            f"download the data into '{dataset_dir}' and replace '{remote[0]}' with \"file_name\": \"<its file>\""
        )
    for key in entry:
        if key not in _ENTRY_KEYS and key not in _IGNORED_KEYS:
            raise DataError(f"{where}: unknown key '{key}'{did_you_mean(key, _ENTRY_KEYS)}")
    for key in _IGNORED_KEYS:
        if key in entry:
            logger.info("%s: '%s' only applies to hub datasets; ignored for local files", where, key)

    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise DataError(f"{where}: 'file_name' is required (the data file or folder, relative to '{dataset_dir}')")
    formatting = entry.get("formatting", "alpaca")
    if not isinstance(formatting, str):
        raise DataError(f"{where}: 'formatting' must be one name ({', '.join(FORMATS.names())}), got {formatting!r}")
    if formatting not in FORMATS:
        raise DataError(
            f"{where}: unknown formatting '{formatting}'{did_you_mean(str(formatting), FORMATS.names())}; "
            f"choose one of: {', '.join(FORMATS.names())}"
        )
    ranking = entry.get("ranking", False)
    if not isinstance(ranking, bool):
        raise DataError(f"{where}: 'ranking' must be true or false, got {ranking!r}")
    split = entry.get("split", "train")
    if not isinstance(split, str):
        raise DataError(f"{where}: 'split' must be a split name (a string), got {split!r}")
    if split != "train":
        logger.warning("%s: split '%s' is ignored; a local data file has a single split", where, split)
    num_samples = entry.get("num_samples")
    if num_samples is not None and (
        not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1
    ):
        raise DataError(f"{where}: 'num_samples' must be a positive integer, got {num_samples!r}")

    columns_in = _sub_object(entry, "columns", where)
    for key in columns_in:
        if key in _MULTIMODAL_COLUMNS:
            raise DataError(f"{where}: columns.{key}: multimodal data is not supported yet; remove this entry's use")
        if key not in _COLUMN_KEYS:
            raise DataError(f"{where}: unknown column key '{key}'{did_you_mean(key, _COLUMN_KEYS)}")
    tags_in = _sub_object(entry, "tags", where)
    for key in tags_in:
        if key not in _TAG_KEYS:
            raise DataError(f"{where}: unknown tag key '{key}'{did_you_mean(key, _TAG_KEYS)}")
    for group, values in (("columns", columns_in), ("tags", tags_in)):
        for key, value in values.items():
            if not isinstance(value, str) or not value:
                raise DataError(f"{where}: {group}.{key} must be a field name (a string), got {value!r}")

    defaults = Columns(messages="messages") if formatting == "openai" else Columns()
    tag_defaults = OPENAI_TAGS if formatting == "openai" else Tags()
    if ranking and not {"chosen", "rejected"} <= set(columns_in):
        # LLaMA-Factory has no default for these; naming them here beats dropping every record later.
        raise DataError(f"{where}: a ranking dataset must set columns.chosen and columns.rejected")

    return DatasetSpec(
        name=name,
        paths=tuple(str(p) for p in list_data_files(file_name, dataset_dir, dataset=name, source=source)),
        file_name=file_name,
        formatting=formatting,
        ranking=ranking,
        columns=replace(defaults, **columns_in),
        tags=replace(tag_defaults, **tags_in),
        configured_columns=tuple(columns_in),
        split=split,
        num_samples=num_samples,
        source=source,
    )


def infer_spec(path_name: str, dataset_dir: Path) -> DatasetSpec:
    """A spec for a bare data file, its format guessed from the first record.

    The guess, in order: a `messages` (or `conversations`) list of {role, content} -> openai; a
    `conversations` (or `messages`) list of {from, value} -> sharegpt; otherwise alpaca, reading `text` as
    the prompt when there is no `instruction` (pretraining corpora). `chosen` + `rejected` fields make it
    a ranking dataset; `system`, `tools` and `history` fields are used when present.
    """
    path = Path(path_name) if Path(path_name).exists() else dataset_dir / path_name
    paths = list_data_files(str(path), Path("."), dataset=path_name, source=None)
    record = peek_record(paths[0]) or {}
    columns: dict[str, str] = {}
    formatting, tags = "alpaca", Tags()
    for key in ("messages", "conversations"):
        turns = record.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            formatting = "openai" if "role" in turns[0] else "sharegpt"
            tags = OPENAI_TAGS if formatting == "openai" else Tags()
            columns["messages"] = key
            break
    if formatting == "alpaca" and "instruction" not in record and "text" in record:
        columns["prompt"] = "text"
    ranking = "chosen" in record and "rejected" in record
    if ranking:
        columns.update(chosen="chosen", rejected="rejected")
    for key in ("system", "tools") + (("history",) if formatting == "alpaca" else ()):
        if key in record:
            columns[key] = key
    defaults = Columns(messages="messages") if formatting == "openai" else Columns()
    logger.info("dataset '%s': read as %s%s", path_name, formatting, " (ranking)" if ranking else "")
    return DatasetSpec(
        name=path_name,
        paths=tuple(str(p) for p in paths),
        file_name=str(path),
        formatting=formatting,
        ranking=ranking,
        columns=replace(defaults, **columns),
        tags=tags,
        configured_columns=tuple(columns),
    )


def _read_info(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    problem = text_problem(data[:8192])
    if problem:
        raise DataError(f"{path}: {problem}")
    if not data.strip():
        raise DataError(f'{path} is empty; it should hold an object like {{"my_data": {{"file_name": "data.json"}}}}')
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object mapping dataset names to entries")
    return info


def _sub_object(entry: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = entry.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"{where}: '{key}' must be an object, got {value!r}")
    return value


def _looks_like_file(name: str, dataset_dir: Path) -> bool:
    path = Path(name)
    return path.exists() or (dataset_dir / path).exists() or path.suffix.lstrip(".") in SUPPORTED_EXTENSIONS
