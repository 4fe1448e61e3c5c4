"""LLaMA-Factory 0.9.5 in its own venv, for side-by-side benchmarks (never a dependency of lmforge).

Install order: torch 2.13.0 (a CPU wheel here) first, then `llamafactory==0.9.5` constrained to it. PyPI's
torchvision / torchaudio are CUDA builds: torchvision is uninstalled and torchaudio's shared libraries are
moved aside, without which `llamafactory-cli` dies at import on a CPU machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LF_VERSION = "0.9.5"
TORCH_VERSION = "2.13.0"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}


def lf_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_lf_venv(venv: Path) -> None:
    """Install LLaMA-Factory in `venv` once (see this module's docstring for why torchvision/torchaudio go)."""
    marker = venv / ".lmforge-bench-installed"
    if marker.exists():
        return
    print(f"[bench] installing LLaMA-Factory {LF_VERSION} into {venv} (a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(lf_python(venv)), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraint:
        constraint.write(f"torch=={TORCH_VERSION}\n")
    subprocess.run(pip + [f"llamafactory=={LF_VERSION}", "-c", constraint.name], check=True)
    os.unlink(constraint.name)
    subprocess.run([str(lf_python(venv)), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=True)
    site = subprocess.run([str(lf_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    aside = venv / "torchaudio-libs-disabled"
    aside.mkdir(exist_ok=True)
    for lib in (Path(site) / "torchaudio" / "lib").glob("*.so"):
        shutil.move(str(lib), aside / lib.name)
    subprocess.run([str(venv / "bin" / "llamafactory-cli"), "version"], check=True, env=offline_env())
    marker.write_text("ok\n")


def offline_env() -> dict:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.pop("VIRTUAL_ENV", None)
    return env
