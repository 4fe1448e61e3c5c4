"""What a LLaMA-Factory user may ask for that lmforge does not do: said plainly, never dropped in silence.

- Keys: `unknown_key_message` tells a LLaMA-Factory key lmforge lacks ("LLaMA-Factory's GaLore option is not
  supported yet") from a typo (a suggestion only when the name is genuinely close).
- Keys lmforge accepts but does not act on (`infer_backend: vllm`, `export_device`) and LLaMA-Factory
  environment switches it does not honour (`USE_RAY`, `USE_V1`, ...) are reported as warnings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lmforge.config.llamafactory_keys import DEFAULT_OF_KEY, FEATURE_OF_KEY, REASONS
from lmforge.errors import did_you_mean
from lmforge.logging import get_logger

logger = get_logger(__name__)

ACCEPTED_UNUSED: dict[str, tuple[Any, str]] = {
    # key: (the value that asks for nothing, why any other value has no effect)
    "infer_backend": ("huggingface", "lmforge generates with transformers; vLLM / SGLang are not used"),
    "export_device": ("cpu", "lmforge merges adapters on the CPU, in fp32"),
    "cache_dir": (None, "lmforge loads local directories only; there is no hub download cache to set"),
    "low_cpu_mem_usage": (True, "transformers always loads weights without a second full copy"),
    "disable_gradient_checkpointing": (False, "lmforge checkpoints only when 'gradient_checkpointing: true'"),
    "ddp_timeout": (None, ""),  # honoured by transformers; listed so it is never reported
}

UNHONOURED_ENV: dict[str, str] = {
    # LLaMA-Factory's environment switches; lmforge's own launcher variables (NPROC_PER_NODE, NNODES,
    # NODE_RANK, MASTER_ADDR, MASTER_PORT, FORCE_TORCHRUN) and API_* are honoured and not listed.
    "USE_V1": "LLaMA-Factory's v1 trainer",
    "USE_RAY": "training on a Ray cluster",
    "USE_KT": "KTransformers",
    "USE_MCA": "Megatron Core Adapter",
    "USE_MEGATRON_BRIDGE": "Megatron Bridge",
    "USE_MODELSCOPE_HUB": "downloads from ModelScope (lmforge loads local directories only)",
    "USE_OPENMIND_HUB": "downloads from Modelers/OpenMind (lmforge loads local directories only)",
    "ALLOW_EXTRA_ARGS": "accepting unknown keys (lmforge always refuses them)",
    "ALLOW_EXTRA_KEYS": "accepting unknown keys (lmforge always refuses them)",
    "RECORD_VRAM": "recording GPU memory in the logs",
    "NPU_JIT_COMPILE": "Ascend NPU JIT compilation",
    "MAX_RESTARTS": "torchrun restarts of failed workers",
    "RDZV_ID": "elastic torchrun rendezvous",
    "MIN_NNODES": "elastic torchrun node counts",
    "MAX_NNODES": "elastic torchrun node counts",
    "MAX_CONCURRENT": "concurrent API requests",
    "API_VERBOSE": "API request logging",
    "FASTAPI_ROOT_PATH": "serving the API under a path prefix",
}
_OFF = ("", "0", "false", "n", "no", "off")


def unknown_key_message(key: str, value: Any, known: list[str]) -> str | None:
    """The line for a key lmforge does not know; None for a LLaMA-Factory key set to its default (asks nothing)."""
    if key in FEATURE_OF_KEY:
        if value == DEFAULT_OF_KEY[key]:
            return None
        feature = FEATURE_OF_KEY[key]
        option = f"{feature} option ('{key}')" if feature else f"'{key}' option"
        why = f" ({REASONS[feature]})" if REASONS.get(feature) else " yet"
        return f"LLaMA-Factory's {option} is not supported{why}; remove '{key}' to run without it"
    return f"unknown key '{key}'{did_you_mean(key, known)}"


def unhonoured_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Warnings for accepted-but-unused keys set to something other than their no-op value, and for
    LLaMA-Factory environment switches that are set."""
    notes = []
    for key, (neutral, why) in ACCEPTED_UNUSED.items():
        if key in raw and why and raw[key] != neutral and raw[key] is not None:
            notes.append(f"'{key}: {raw[key]}' is accepted for LLaMA-Factory configs but has no effect: {why}")
    for variable, what in UNHONOURED_ENV.items():
        value = env.get(variable)
        if value is not None and value.strip().lower() not in _OFF:
            notes.append(f"{variable}={value} is LLaMA-Factory's switch for {what}; lmforge does not honour it")
    return notes


def report_unhonoured(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    for note in unhonoured_settings(raw, os.environ if env is None else env):
        logger.warning(note)
