"""Every figure lmforge logs means the same at any world size, and an accelerate FSDP config runs FSDP on CPU.

The same global batch as 1 process x batch 4 and as 2 gloo processes x batch 2: every key of every record of
trainer_log.jsonl and all_results.json must agree (timings excepted, whose per-device and total forms must
agree with each other). Gradient accumulation 2 and logging_steps 3 of 4 steps leave steps unlogged at the end,
the case where transformers used to add one rank's world-size-scaled loss into `train_loss` (6.77 vs 6.52).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
# measurements of the machine, not of the training: they need not agree between world sizes
TIMING = re.compile(r"(elapsed_s|_runtime|per_second|per_s|tflops|mfu|^time/|^peak_.*_gib$)")


def write_data(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    with open(folder / "qa.jsonl", "w") as f:
        for i in range(48):  # answers of different lengths: ranks hold different token counts
            f.write(json.dumps({"instruction": f"Count to {i % 9}", "output": " ".join(map(str, range(i % 9 + 1)))}) + "\n")
    with open(folder / "pairs.jsonl", "w") as f:
        for i in range(48):
            f.write(json.dumps({"instruction": f"Is {i} fine?", "chosen": "Yes, " + "fine " * (i % 5),
                                "rejected": "No."}) + "\n")
    info = {"qa": {"file_name": "qa.jsonl"},
            "pairs": {"file_name": "pairs.jsonl", "ranking": True,
                      "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def write_config(path: Path, model: Path, data: Path, output: Path, batch: int, **extra) -> Path:
    config = {
        "model_name_or_path": str(model), "stage": "sft", "finetuning_type": "full", "template": "qwen",
        "dataset_dir": str(data), "dataset": "qa", "cutoff_len": 64, "output_dir": str(output),
        "data_cache_dir": str(path.parent / "cache"), "overwrite_output_dir": True,
        "per_device_train_batch_size": batch, "per_device_eval_batch_size": batch, "gradient_accumulation_steps": 2,
        "max_steps": 4, "learning_rate": 1e-3, "lr_scheduler_type": "constant", "logging_steps": 3,
        "save_strategy": "no", "seed": 3, "val_size": 8, "eval_strategy": "steps", "eval_steps": 3, "do_eval": True,
        "dataloader_num_workers": 0, "disable_tqdm": True,
    }
    config.update(extra)
    path.write_text(json.dumps(config))
    return path


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK") and not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(extra)
    return env


def run(command: list[str], cwd: Path, ok: bool = True, **env) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def train(config: Path, nproc: int) -> str:
    if nproc == 1:  # the one-process reference runs in this process: a process start (~6 s of imports) saved
        from lmforge.cli import main

        assert not any(k in os.environ for k in ("LOCAL_RANK", "WORLD_SIZE", "RANK"))
        assert main(["train", str(config)]) == 0
        return ""
    return run([sys.executable, "-m", "lmforge.cli", "train", str(config)], config.parent,
               NPROC_PER_NODE=str(nproc)).stderr


def records(output: Path) -> list[dict]:
    rows = [json.loads(line) for line in (output / "trainer_log.jsonl").read_text().splitlines()]
    return rows + [json.loads((output / "all_results.json").read_text())]


def assert_same_figures(single: list[dict], multi: list[dict], world: int) -> int:
    """Every key equal (rel 1e-4: reductions add in another order), timings consistent; returns keys compared."""
    assert len(single) == len(multi)
    compared = 0
    for one, many in zip(single, multi):
        assert one.keys() == many.keys(), (one.keys() ^ many.keys())
        for key, value in one.items():
            if key.endswith("_per_device") and key.removesuffix("_per_device") in many:
                total = many[key.removesuffix("_per_device")]
                assert many[key] == pytest.approx(total / world, rel=1e-3, abs=0.02), key
            if TIMING.search(key):
                continue
            assert isinstance(many[key], type(value)) or isinstance(value, float), key
            if isinstance(value, float) and math.isfinite(value):
                # abs 2e-6: the stage metrics are logged rounded to 6 decimals, one rounding step either side
                assert many[key] == pytest.approx(value, rel=1e-4, abs=2e-6), (key, value, many[key])
            else:
                assert many[key] == value, (key, value, many[key])
            compared += 1
    return compared


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("world")
    write_data(root / "data")
    return root


def test_sft_figures_are_the_same_at_world_size_1_and_2(workdir, tiny_model_dir):
    data = workdir / "data"
    train(write_config(workdir / "sft1.json", tiny_model_dir, data, workdir / "sft1", batch=4), 1)
    log = train(write_config(workdir / "sft2.json", tiny_model_dir, data, workdir / "sft2", batch=2), 2)
    assert "distributed: MULTI_CPU over 2 processes" in log
    single, multi = records(workdir / "sft1"), records(workdir / "sft2")
    assert {"loss", "eval_loss", "train_loss", "perplexity", "throughput/tokens_total"} <= set().union(*single)
    assert assert_same_figures(single, multi, world=2) > 30
    assert multi[-1]["train_loss"] == pytest.approx(single[-1]["train_loss"], rel=1e-6)


def test_dpo_figures_are_the_same_at_world_size_1_and_2(workdir, tiny_model_dir):
    data = workdir / "data"
    extra = {"stage": "dpo", "dataset": "pairs", "finetuning_type": "lora", "lora_rank": 4, "learning_rate": 5e-3}
    train(write_config(workdir / "dpo1.json", tiny_model_dir, data, workdir / "dpo1", batch=4, **extra), 1)
    train(write_config(workdir / "dpo2.json", tiny_model_dir, data, workdir / "dpo2", batch=2, **extra), 2)
    single, multi = records(workdir / "dpo1"), records(workdir / "dpo2")
    assert {"rewards/accuracies", "rewards/margins", "eval_rewards/chosen", "train_loss"} <= set().union(*single)
    assert assert_same_figures(single, multi, world=2) > 20


def test_grpo_figures_are_the_same_at_world_size_1_and_2(workdir, tiny_model_dir):
    """Each completion is sampled from its global row's seed, so the processes' halves of a step sample what one
    process sampling the whole step does; rewards, advantages, KL, clip ratios and DAPO's step-wide token
    normaliser then agree key by key."""
    data = workdir / "data"
    (data / "rewards.py").write_text("def odd(prompts, completions, **_):\n"
                                     "    return [float(len(c) % 3) for c in completions]\n")
    extra = {"stage": "grpo", "num_generations": 4, "max_completion_length": 8, "beta": 0.04, "val_size": 0,
             "eval_strategy": "no", "do_eval": False, "logging_steps": 1, "gradient_accumulation_steps": 1,
             "reward_funcs": [f"{data / 'rewards.py'}:odd"]}
    train(write_config(workdir / "grpo1.json", tiny_model_dir, data, workdir / "grpo1", batch=16, **extra), 1)
    train(write_config(workdir / "grpo2.json", tiny_model_dir, data, workdir / "grpo2", batch=8, **extra), 2)
    single, multi = records(workdir / "grpo1"), records(workdir / "grpo2")
    assert {"reward", "kl", "clip_ratio/low_mean", "frac_reward_zero_std", "entropy", "train_loss"} <= set().union(*single)
    assert len({r["reward"] for r in single if "reward" in r}) > 1 and min(r["grad_norm"] for r in single
                                                                            if "grad_norm" in r) > 0
    assert assert_same_figures(single, multi, world=2) > 30


def test_ppo_figures_are_the_same_at_world_size_1_and_2(workdir, tiny_model_dir):
    """Every process samples the global rollout batch (identical by its row seeds) and trains on the mini-batches
    accelerate deals it: one process accumulating the same mini-batches gives the same figures."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.model.value_head import ValueHeadModel

    data = workdir / "data"
    torch.manual_seed(0)
    ValueHeadModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).save_pretrained(workdir / "rm")
    extra = {"stage": "ppo", "finetuning_type": "lora", "lora_rank": 4, "reward_model": str(workdir / "rm"),
             "max_new_tokens": 8, "ppo_epochs": 2, "val_size": 0, "eval_strategy": "no", "do_eval": False,
             "logging_steps": 1}
    train(write_config(workdir / "ppo1.json", tiny_model_dir, data, workdir / "ppo1", batch=2, **extra), 1)
    extra["gradient_accumulation_steps"] = 1
    train(write_config(workdir / "ppo2.json", tiny_model_dir, data, workdir / "ppo2", batch=2, **extra), 2)
    single, multi = records(workdir / "ppo1"), records(workdir / "ppo2")
    assert {"reward", "kl", "kl_coef", "policy_loss", "value_loss", "train_loss"} <= set().union(*single)
    assert assert_same_figures(single, multi, world=2) > 30


def accelerate_launch(config_file: Path, train_config: Path, ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "-m", "lmforge.cli", "train", str(train_config)]
    return run(command, train_config.parent, ok=ok)


def test_accelerate_fsdp_config_shards_on_cpu(workdir, tiny_model_dir):
    """examples/accelerate/fsdp_config.yaml (use_cpu: false, as written for GPUs) runs FSDP2 over gloo."""
    data = workdir / "data"
    single = workdir / "sft1"
    if not (single / "all_results.json").exists():
        train(write_config(workdir / "sft1.json", tiny_model_dir, data, single, batch=4), 1)
    config = write_config(workdir / "acc.json", tiny_model_dir, data, workdir / "acc", batch=2)
    log = accelerate_launch(ROOT / "examples/accelerate/fsdp_config.yaml", config).stderr
    # not DDP (accelerate's default on CPUs): each process holds half of every parameter
    assert "distributed: FSDP over 2 processes; this process holds 79,136 of 158,272 parameter elements (50.0%)" in log
    assert "reducer.cpp" not in log  # DDP's reducer never ran
    assert_same_figures(records(single), records(workdir / "acc"), world=2)


def test_accelerate_fsdp_offload_config_stops_with_one_line(workdir, tiny_model_dir):
    config = write_config(workdir / "off.json", tiny_model_dir, workdir / "data", workdir / "off", batch=2)
    done = accelerate_launch(ROOT / "examples/accelerate/fsdp_config_offload.yaml", config, ok=False)
    assert done.returncode != 0
    assert "lmforge: error: FSDP parameter offload" in done.stderr
    assert "[rank0]: Traceback" not in done.stderr and not (workdir / "off" / "trainer_log.jsonl").exists()


def test_launched_fsdp_config_reads_accelerates_variables():
    from lmforge.config.accelerate_env import check_fsdp_on_cpu, launched_fsdp_config
    from lmforge.errors import ConfigError

    assert launched_fsdp_config({}) is None
    env = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
           "FSDP_TRANSFORMER_CLS_TO_WRAP": "Qwen2DecoderLayer", "FSDP_MIN_NUM_PARAMS": "100000000",
           "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_OFFLOAD_PARAMS": "false", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}
    assert launched_fsdp_config(env) == {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"],
        "reshard_after_forward": True, "cpu_offload": False, "state_dict_type": "FULL_STATE_DICT"}
    with pytest.raises(ConfigError, match="FSDP version 1"):
        launched_fsdp_config({"ACCELERATE_USE_FSDP": "true"})  # accelerate's default version
    with pytest.raises(ConfigError, match="DeepSpeed"):
        launched_fsdp_config({"ACCELERATE_USE_DEEPSPEED": "true"})
    with pytest.raises(ConfigError, match="offload"):
        check_fsdp_on_cpu("full_shard auto_wrap offload", {})
    with pytest.raises(ConfigError, match="version 1"):
        check_fsdp_on_cpu(True, {"fsdp_version": 1})
    check_fsdp_on_cpu("full_shard auto_wrap", {"version": 2})
