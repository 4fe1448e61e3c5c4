"""lmforge_run.json: what a trained run records next to its model so chat, api and export can use it later.

    write_run_info(output_dir, {"stage": "sft", "template": "qwen", ...})   # at the end of training
    trained_template("saves/lora/sft", "models/base")                       # -> "qwen"

Plain JSON at the bottom layer: training writes it, inference and export read it, neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_INFO_FILE = "lmforge_run.json"
"""Written next to the saved model: what chat/serve/export need to use it without repeating the config."""


def write_run_info(output_dir: str | Path, info: dict[str, Any]) -> Path:
    path = Path(output_dir) / RUN_INFO_FILE
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_run_info(directory: str | Path) -> dict[str, Any] | None:
    """The run info saved in `directory` (a hub id: its cached snapshot), or None when it holds none (a model not
    trained by lmforge)."""
    from lmforge.hub_cache import looks_like_hub_id, resolve_hub_id

    if not Path(directory).is_dir() and looks_like_hub_id(str(directory)):
        directory = resolve_hub_id(str(directory)) or directory
    path = Path(directory) / RUN_INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def trained_template(adapter_name_or_path: str | None, model_name_or_path: str | None) -> str | None:
    """The template recorded by the training run, looked up in the adapter directories (last first), then the
    model's directory."""
    return trained_setting("template", adapter_name_or_path, model_name_or_path)


def trained_setting(key: str, adapter_name_or_path: str | None, model_name_or_path: str | None) -> Any:
    """`key` of the run info of the last-trained directory: the adapters (last first), then the model."""
    adapters = [p.strip() for p in (adapter_name_or_path or "").split(",") if p.strip()]
    for source in [*reversed(adapters), model_name_or_path]:
        if source and (info := read_run_info(source)) is not None:
            return info.get(key)
    return None
