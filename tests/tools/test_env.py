"""`lmforge env`: versions, devices and the source commit, for bug reports."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lmforge.cli import main
from lmforge.tools import env_report


def test_env_prints_versions_devices_and_commit(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for name in ("Python version", "torch version", "transformers version", "peft version", "datasets version",
                 "accelerate version", "deepspeed version", "bitsandbytes version", "vllm version",
                 "lmforge version", "lmforge commit", "GPU"):
        assert f"- {name}" in out, name
    import transformers

    assert f"- transformers version: {transformers.__version__}" in out
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(env_report.__file__).parent,
                          capture_output=True, text=True).stdout.strip()
    assert f"- lmforge commit: {head or 'unknown'}" in out


def test_missing_package_is_not_installed():
    assert env_report.package_version("surely-not-a-package-lmforge") == "not installed"


def test_commit_unknown_outside_a_checkout(tmp_path):
    assert env_report.source_commit(tmp_path / "file.py") == "unknown"
    installed = tmp_path / "site-packages" / "lmforge"
    installed.mkdir(parents=True)
    assert env_report.source_commit(installed / "cli.py") == "unknown"


def test_env_takes_no_arguments(capsys):
    assert main(["env", "extra"]) == 2
    assert "takes no arguments" in capsys.readouterr().err
