"""On-disk cache of tokenized datasets, keyed by everything that changes the tokens.

The key hashes the data files' bytes, the tokenizer (vocabulary, special tokens, chat template), the
template and every argument the processors read. A second identical run loads the cached arrow files
instead of tokenizing again; any change gives a new key and a fresh tokenization. Writes go to a temporary
folder renamed into place, so a killed run never leaves a half-written cache entry that looks complete.

Each entry also keeps the drop report of the run that built it (`drop_report.json`: the warnings naming
dropped records per reason), so a run that loads the entry reports the same drops instead of none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from datasets import DatasetDict, load_from_disk

from lmforge.logging import get_logger

logger = get_logger(__name__)

CACHE_FORMAT_VERSION = 2  # bump when the processors change what they emit for the same inputs (2: drop report)
DROP_REPORT = "drop_report.json"


def default_cache_root() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "tokenized"


def tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    digest.update(repr(sorted(tokenizer.added_tokens_decoder.items())).encode())
    return digest.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    payload = json.dumps({"version": CACHE_FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_cached(path: Path) -> DatasetDict | None:
    if not (path / "dataset_dict.json").is_file():
        return None
    return load_from_disk(str(path))


def load_drop_report(path: Path) -> list[str]:
    """The drop warnings saved with a cache entry ([] for an entry saved without any)."""
    try:
        report = json.loads((path / DROP_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [line for line in report if isinstance(line, str)] if isinstance(report, list) else []


def save_atomically(data: DatasetDict, path: Path, drop_report: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    data.save_to_disk(str(tmp))
    (tmp / DROP_REPORT).write_text(json.dumps(drop_report or [], indent=1), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
