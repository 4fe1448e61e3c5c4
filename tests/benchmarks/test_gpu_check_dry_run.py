"""benchmarks/gpu_check.sh --dry-run: every command the GPU check would launch is built and its config passes
lmforge's loader; what needs a missing package is named as skipped, not dropped."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_dry_run_validates_every_command(tmp_path):
    # in this process (gpu_check.sh only sets PYTHONPATH and execs the script): a process start saved
    spec = importlib.util.spec_from_file_location("gpu_speed", REPO / "benchmarks/gpu_speed.py")
    gpu_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_speed)
    out = tmp_path / "plan.json"
    assert gpu_speed.main(["--dry-run", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert report["dry_run"] and set(checks) == {
        "sft_packed_varlen_attn", "sft_packed_sdpa_varlen", "sft_padded_sdpa", "deepspeed_zero2", "deepspeed_zero3",
        "fsdp", "lora_bf16", "qlora_nf4", "engine_throughput"}
    for name, entry in checks.items():
        assert entry["valid"] is True or str(entry["valid"]).startswith("not checkable here"), (name, entry)
        assert "invalid" not in entry
    assert checks["fsdp"]["command"].startswith("FORCE_TORCHRUN=1 lmforge train ")
    for stage in (2, 3):
        config = json.loads((tmp_path / "work" / "deepspeed" / f"zero{stage}.json").read_text())
        assert config["zero_optimization"]["stage"] == stage
    packed = (tmp_path / "work" / "configs" / "sft_packed_varlen_attn.yaml").read_text()
    assert "attn_implementation: varlen_attn" in packed and "packing: true" in packed


def test_without_a_gpu_the_real_run_refuses(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr
