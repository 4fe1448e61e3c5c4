"""`lmforge estimate` as a user runs it: printed figures, units, and one-line errors."""

from __future__ import annotations

import json
import re

from lmforge.cli import main
from tests.planner.test_arithmetic import QWEN25_15B, QWEN25_15B_PARAMS


def run(capsys, *argv):
    code = main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def gib(out: str, row: str) -> float:
    return float(re.search(rf"{row}\s+([0-9.]+) GiB", out).group(1))


def test_memory_breakdown_per_device(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_15B))
    code, out, _ = run(capsys, str(tmp_path), "--zero", "2", "--devices", "8", "--seq-len", "1024")
    assert code == 0
    assert f"{QWEN25_15B_PARAMS:,} parameters" in out and "1 GiB = 2^30 bytes" in out
    assert "DeepSpeed ZeRO-2" in out
    assert gib(out, "weights") == round(2 * QWEN25_15B_PARAMS / 2**30, 3)
    assert gib(out, "gradients") == round(2 / 8 * QWEN25_15B_PARAMS / 2**30, 3)
    assert gib(out, "optimizer states") == round(12 / 8 * QWEN25_15B_PARAMS / 2**30, 3)
    assert "2 bytes/param" in out and "0.25 bytes/param" in out and "1.5 bytes/param" in out

    code, out_gb, _ = run(capsys, str(tmp_path / "config.json"), "--zero", "2", "--devices", "8", "--seq-len", "1024",
                          "--units", "GB")
    assert float(re.search(r"weights\s+([0-9.]+) GB", out_gb).group(1)) == round(2 * QWEN25_15B_PARAMS / 1e9, 3)


def test_largest_micro_batch_and_time(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_15B))
    code, out, _ = run(capsys, str(tmp_path), "--gradient-checkpointing", "--device-memory", "80GiB",
                       "--tokens", "1B", "--mfu", "0.5", "--gpu", "H100")
    assert code == 0
    best = int(re.search(r"largest micro-batch in 80.00 GiB: (\d+)", out).group(1))
    assert best > 1
    flops = float(re.search(r"\(([0-9.e+]+) FLOPs/token", out).group(1))
    hours = 1e9 * flops / (989.5e12 * 0.5) / 3600
    assert f"{int(hours)} h {int(hours % 1 * 60)} min" in out


def test_mfu_subcommand(capsys):
    code, out, _ = run(capsys, "mfu", "--params", "65B", "--tokens", "1.4T", "--time", "21d", "--devices", "2048",
                       "--peak-tflops", "312")
    assert code == 0 and "MFU (6N, 3.9e+11 FLOPs/token): 47.1%" in out
    code, out, _ = run(capsys, "mfu", "--params", "175B", "--tokens", "300B", "--time", "30d", "--devices", "1024",
                       "--gpu", "A100")
    assert code == 0 and "38.0%" in out


def test_user_errors_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, str(tmp_path / "missing"))
    assert code == 1 and "no model config found" in err and "Traceback" not in err
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_15B))
    code, _, err = run(capsys, str(tmp_path), "--optimizer", "adamw_torh")
    assert code == 2 and "did you mean 'adamw_torch'" in err
    code, _, err = run(capsys, str(tmp_path), "--offload", "optimizer")
    assert code == 2 and "offload needs DeepSpeed ZeRO" in err
    code, _, err = run(capsys, str(tmp_path), "--tokens", "1B")
    assert code == 2 and "--peak-tflops" in err
    code, _, err = run(capsys, "mfu", "--params", "65B", "--tokens", "1.4T", "--time", "3 weeks", "--devices", "8",
                       "--peak-tflops", "312")
    assert code == 2 and "not a duration" in err


def _grpo_config(tmp_path, **keys):
    import yaml

    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text(json.dumps(QWEN25_15B))
    raw = {"model_name_or_path": str(tmp_path / "model"), "stage": "grpo", "do_train": True,
           "finetuning_type": "full", "dataset": "gsm8k", "cutoff_len": 512, "max_completion_length": 256,
           "per_device_train_batch_size": 8, "num_generations": 8, "reward_funcs": ["accuracy"], "bf16": True,
           "output_dir": str(tmp_path / "out"), **keys}
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _plan_for(tmp_path, finetuning_type, beta):
    from lmforge.config.adapter_args import AdapterArguments
    from lmforge.config.rl_args import RLArguments
    from lmforge.planner.memory import Setup, estimate_memory
    from lmforge.planner.shape import load_shape
    from lmforge.planner.stage_memory import for_stage
    from lmforge.stages import STAGES

    shape = load_shape(tmp_path / "model", AdapterArguments(finetuning_type))
    setup = for_stage(Setup(seq_len=512, micro_batch=8, dtype="bf16"), STAGES.get("grpo"),
                      rl=RLArguments(max_completion_length=256, beta=beta))
    return estimate_memory(shape, setup)


def test_grpo_run_config_prints_rollout_cache_and_the_plan_total(tmp_path, capsys):
    code, out, _ = run(capsys, str(_grpo_config(tmp_path)), "--tokens", "1B", "--gpu", "H100")
    assert code == 0
    assert "micro-batch: 8 x 768 tokens (prompt 512 + completion 256)" in out
    # 2 (K, V) x 28 layers x 2 KV heads x 128 x 768 tokens x 8 completions x 2 bytes
    assert gib(out, "rollout KV cache") == round(2 * 28 * 2 * 128 * 768 * 8 * 2 / 2**30, 3)
    assert "reference model" not in out  # beta defaults to 0: none at all
    plan = _plan_for(tmp_path, "full", 0.0)
    assert gib(out, r"total \(peak\)") == round(plan.total / 2**30, 3)
    assert "lmforge's count at seq 768" in out


def test_grpo_reference_model_with_beta_full_not_lora(tmp_path, capsys):
    code, out, _ = run(capsys, str(_grpo_config(tmp_path, beta=0.04)))
    assert code == 0 and gib(out, "reference model") == round(2 * QWEN25_15B_PARAMS / 2**30, 3)
    assert gib(out, r"total \(peak\)") == round(_plan_for(tmp_path, "full", 0.04).total / 2**30, 3)
    code, out, _ = run(capsys, str(_grpo_config(tmp_path, beta=0.04, finetuning_type="lora")))
    assert code == 0 and "rollout KV cache" in out
    assert gib(out, "reference model") == 0.0 and "adapter off" in out  # listed, no extra weights
