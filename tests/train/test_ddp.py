"""`lmforge train` under torchrun: when it relaunches itself, and FSDP from the YAML on gloo CPU processes.

That DDP gives the figures of one process with the global batch, for every stage, is tested key by key in
test_world_size_metrics.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.launcher import torchrun_command, wants_torchrun


def sft_config(path: Path, model: Path, data: Path, output: Path, batch: int) -> Path:
    config = {
        "model_name_or_path": str(model), "stage": "sft", "finetuning_type": "full", "template": "qwen",
        "dataset_dir": str(data), "dataset": "qa", "cutoff_len": 64, "output_dir": str(output),
        "overwrite_output_dir": True, "per_device_train_batch_size": batch, "max_steps": 5, "learning_rate": 1e-3,
        "lr_scheduler_type": "constant", "logging_steps": 1, "save_strategy": "no", "seed": 3,
        "dataloader_num_workers": 0,
    }
    path.write_text(json.dumps(config))
    return path


def losses(output: Path) -> list[float]:
    records = [json.loads(line) for line in (output / "trainer_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def run_train(config: Path, cwd: Path, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    environment.update(env)
    done = subprocess.run([sys.executable, "-m", "lmforge.cli", "train", str(config)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


@pytest.fixture
def data(tmp_path) -> Path:
    """40 counting samples; answers of different lengths, so rows pad differently per rank."""
    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / "qa.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"instruction": f"Count to {i % 9}", "output": " ".join(map(str, range(i % 9 + 1)))}) + "\n")
    (folder / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.jsonl"}}))
    return folder


def test_when_to_relaunch_and_the_command():
    assert not wants_torchrun({"NPROC_PER_NODE": "1"})
    assert wants_torchrun({"NPROC_PER_NODE": "2"})
    assert wants_torchrun({"NPROC_PER_NODE": "1", "FORCE_TORCHRUN": "1"})
    assert not wants_torchrun({"NPROC_PER_NODE": "2", "LOCAL_RANK": "0"})  # already a worker: never again
    env = {"NPROC_PER_NODE": "4", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29511"}
    command = torchrun_command(["cfg.yaml", "learning_rate=1e-4"], env)
    assert command[1:] == ["-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "4",
                           "--master_addr", "10.1.2.3", "--master_port", "29511", "-m", "lmforge.cli", "train",
                           "cfg.yaml", "learning_rate=1e-4"]


def test_launch_errors_name_the_variable(tmp_path, tiny_model_dir):
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="NPROC_PER_NODE='two'"):
        wants_torchrun({"NPROC_PER_NODE": "two"})
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        torchrun_command(["c.yaml"], {"NPROC_PER_NODE": "2", "NNODES": "2", "NODE_RANK": "0"})
    with pytest.raises(ConfigError, match="NODE_RANK=2 must be below NNODES=2"):
        torchrun_command(["c.yaml"], {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"})


def fsdp_keys(config: Path) -> Path:
    """The FSDP keys of examples/scale_out/sft_full_fsdp.yaml added to a config."""
    import yaml

    example = yaml.safe_load((Path(__file__).parents[2] / "examples/scale_out/sft_full_fsdp.yaml").read_text())
    fields = json.loads(config.read_text())
    fields.update({key: example[key] for key in ("fsdp", "fsdp_config")})
    config.write_text(json.dumps(fields))
    return config


def test_fsdp_from_the_yaml_shards_and_matches_one_process(tiny_model_dir, data, tmp_path):
    """FSDP2 FULL_SHARD over 2 gloo processes, set by the example's keys: the same losses as 1 x batch 4."""
    from lmforge.cli import main

    single = tmp_path / "single"  # the reference runs in this process: a process start (~6 s of imports) saved
    assert main(["train", str(sft_config(tmp_path / "single.json", tiny_model_dir, data, single, batch=4))]) == 0
    sharded = tmp_path / "fsdp"
    config = fsdp_keys(sft_config(tmp_path / "fsdp.json", tiny_model_dir, data, sharded, batch=2))
    log = run_train(config, tmp_path, NPROC_PER_NODE="2")
    assert "--nproc_per_node 2" in log
    # sharded, not replicated: accelerate used to fall back to DDP on CPUs and give the same losses
    assert "distributed: FSDP over 2 processes" in log and "(50.0%)" in log
    assert losses(sharded) == pytest.approx(losses(single), abs=1e-5)
    assert (sharded / "model.safetensors").exists()  # the full state dict is gathered for the save


def test_deepspeed_examples(tmp_path, tiny_model_dir, monkeypatch, capsys):
    root = Path(__file__).parents[2]
    stages = {p.name: json.loads(p.read_text())["zero_optimization"]["stage"]
              for p in sorted((root / "examples/deepspeed").glob("*.json"))}
    assert stages == {"ds_z0_config.json": 0, "ds_z2_config.json": 2, "ds_z2_offload_config.json": 2,
                      "ds_z3_config.json": 3, "ds_z3_offload_config.json": 3}
    offload = json.loads((root / "examples/deepspeed/ds_z3_offload_config.json").read_text())["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == offload["offload_param"]["device"] == "cpu"

    import importlib.util

    from lmforge.cli import main

    monkeypatch.chdir(root)
    if importlib.util.find_spec("deepspeed") is None:  # CI: a one-line error before any model loads
        code = main(["train", "examples/scale_out/sft_full_ds_z2.yaml", f"model_name_or_path={tiny_model_dir}",
                     f"output_dir={tmp_path / 'out'}"])
        assert code == 2 and "pip install 'lmforge[deepspeed]'" in capsys.readouterr().err
    code = main(["train", "examples/scale_out/sft_full_ds_z2.yaml", f"model_name_or_path={tiny_model_dir}",
                 "deepspeed=examples/deepspeed/missing.json"])
    assert code == 2 and "deepspeed: 'examples/deepspeed/missing.json' is not a file" in capsys.readouterr().err
