"""Where and how `lmforge export` writes a standalone model (LLaMA-Factory's export_* keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ExportDtype = Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"]


@dataclass(frozen=True)
class ExportArguments:
    export_dir: str | None = field(default=None, metadata={"help": "Directory of the standalone model."})
    export_size: float = field(default=5, metadata={"help": "Largest safetensors shard, in GB (10^9 bytes)."})
    export_dtype: ExportDtype = field(
        default="auto", metadata={"help": "Auto (the base model's saved dtype), bf16, fp16 or fp32."}
    )
    export_device: str = field(default="cpu", metadata={"help": "Device to merge on: cpu or auto."})
    export_overwrite: bool = field(
        default=False, metadata={"help": "Write into a non-empty export_dir, replacing what is there."}
    )
    export_legacy_format: bool = field(
        default=False, metadata={"help": "Accepted for LLaMA-Factory configs; must stay false (safetensors only)."}
    )
