"""`lmforge env`: the versions and devices a bug report needs, as LLaMA-Factory's `llamafactory-cli env` prints.

    $ lmforge env
    - lmforge version: 0.1.0
    - lmforge commit: 1ed2503
    - Platform: Linux-6.8.0-x86_64-with-glibc2.39
    - Python version: 3.12.3
    - PyTorch version: 2.9.0+cu128 (GPU)
    ...

Packages are read from their installed metadata (importlib.metadata), so nothing heavy is imported for a
version; only torch is imported, to list the devices. A package that is not installed prints "not installed".
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "deepspeed", "bitsandbytes", "vllm",
            "trl", "tokenizers", "safetensors", "huggingface_hub")
"""The libraries LLaMA-Factory's env reports (plus the ones lmforge loads models and data with)."""


def package_version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def source_commit(start: Path | None = None) -> str:
    """`git rev-parse --short HEAD` of the checkout lmforge runs from, or "unknown" (an installed wheel, no git)."""
    here = (start or Path(__file__)).resolve().parent
    if "site-packages" in here.parts or "dist-packages" in here.parts:
        return "unknown"  # installed, not a checkout: a git repo around the environment is not lmforge's source
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def devices() -> list[tuple[str, str]]:
    """(label, value) rows for the accelerators torch sees; empty without torch."""
    try:
        import torch
    except ImportError:
        return []
    rows: list[tuple[str, str]] = []
    if torch.cuda.is_available():
        kind = "ROCm" if getattr(torch.version, "hip", None) else "CUDA"
        rows.append((f"{kind} version", str(torch.version.hip or torch.version.cuda)))
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"GPU {i}", f"{props.name} ({props.total_memory / 2**30:.1f} GiB)"))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        rows.append(("GPU", "Apple MPS"))
    else:
        rows.append(("GPU", "none (CPU only)"))
    return rows


def env_rows() -> list[tuple[str, str]]:
    from lmforge import __version__

    rows = [("lmforge version", __version__), ("lmforge commit", source_commit()),
            ("Platform", platform.platform()), ("Python version", platform.python_version())]
    for name in PACKAGES:
        rows.append((f"{name} version", package_version(name)))
    rows.extend(devices())
    return rows


def env_main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: lmforge env\n\nprint versions, devices and lmforge's commit, to paste into a bug report")
        return 0
    if argv:
        from lmforge.errors import ConfigError

        raise ConfigError(f"lmforge env takes no arguments, got {' '.join(argv)}")
    print("\n".join(f"- {label}: {value}" for label, value in env_rows()))
    sys.stdout.flush()
    return 0
