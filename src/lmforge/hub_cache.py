"""Hugging Face hub ids (`org/name`) resolved from the local hub cache, offline: lmforge never downloads.

    resolve_hub_id("Qwen/Qwen3-4B", "main")   # -> ~/.cache/huggingface/hub/models--Qwen--Qwen3-4B/snapshots/<commit>

The cache is where transformers and `huggingface-cli download` put models: `HF_HUB_CACHE`, else
`HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub` (~/.cache/huggingface/hub),
the order of huggingface_hub.constants. It is read from the environment at each call, not from those constants,
which are frozen when huggingface_hub is first imported. The snapshot directory for a revision (a branch or
tag through `refs/<revision>`, or a commit hash) is found by huggingface_hub's own
`snapshot_download(..., local_files_only=True)`, so it is the directory transformers would load.

Nothing here imports torch or transformers: the config check (config/validate.py) uses it before they load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
HUB_ID = re.compile(rf"^{_PART}/{_PART}$")
"""`org/name`, as the hub spells repository ids (no leading '.', '/', '~'; exactly one '/')."""


def hub_cache_dir() -> Path:
    """The hub cache directory huggingface_hub would use under the current environment."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                                                "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def looks_like_hub_id(value: str | None) -> bool:
    """`org/name` that is not a local path (an existing file or directory wins, as in transformers)."""
    return bool(value) and HUB_ID.match(value) is not None and not Path(value).exists()


def repo_cache_dir(repo_id: str) -> Path:
    """The cache folder of one model repository: <cache>/models--org--name."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def resolve_hub_id(repo_id: str, revision: str | None = "main") -> Path | None:
    """The cached snapshot directory of `repo_id` at `revision`, or None when it is not in the cache.

    `revision=None` accepts any cached snapshot (the config check, which may not know the revision yet) and
    returns the repository's cache folder.
    """
    folder = repo_cache_dir(repo_id)
    if revision is None:
        return folder if (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir()) else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=str(hub_cache_dir()), local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    return Path(path) if Path(path).is_dir() else None


def not_cached_message(key: str, repo_id: str, revision: str | None = "main") -> str:
    """The one-line error for an `org/name` that is not in the cache: where it looked and how to fetch it."""
    rev = revision or "main"
    folder = repo_cache_dir(repo_id)
    at = f" at revision '{rev}'" if rev != "main" or folder.is_dir() else ""
    fetch = f"huggingface-cli download {repo_id}" + (f" --revision {rev}" if rev != "main" else "")
    return (f"{key}: '{repo_id}' is not in the Hugging Face cache ({folder}){at}; lmforge does not download: "
            f"run `{fetch}` (or set HF_HOME / HF_HUB_CACHE to where it is)")
