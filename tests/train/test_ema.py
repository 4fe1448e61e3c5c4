"""`ema_decay`: the average saved in output_dir/ema (and in each checkpoint) is the EMA of the weights after each
step, computed by hand from the base model and the per-step checkpoints of a real 3-step run."""

from __future__ import annotations

import json

import torch
import yaml
from safetensors.torch import load_file

from lmforge.cli import main

DECAY = 0.5


def test_ema_weights_follow_the_steps_and_load(tmp_path, tiny_model_dir, capsys):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i} {i}"} for i in range(12)]
    (data / "nums.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"nums": {"file_name": "nums.json"}}))
    out = tmp_path / "run"
    config = tmp_path / "ema.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "stage": "sft", "finetuning_type": "full", "template": "qwen",
        "dataset_dir": str(data), "dataset": "nums", "output_dir": str(out), "max_steps": 3, "save_steps": 1,
        "per_device_train_batch_size": 4, "learning_rate": 1e-2, "report_to": "none", "disable_tqdm": True,
        "ema_decay": DECAY}))
    assert main(["train", str(config)]) == 0

    base = load_file(str(tiny_model_dir / "model.safetensors"))
    expected = {k: v.double() for k, v in base.items()}
    for step in (1, 2, 3):
        weights = load_file(str(out / f"checkpoint-{step}" / "model.safetensors"))
        saved_ema = load_file(str(out / f"checkpoint-{step}" / "ema.safetensors"))
        for key, value in weights.items():
            expected[key] = DECAY * expected[key] + (1 - DECAY) * value.double()
        for key, value in saved_ema.items():
            hf_key = key.removeprefix("module.")
            assert torch.allclose(value.double(), expected[hf_key], atol=1e-6), (step, key)
    ema = load_file(str(out / "ema" / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    moved = [k for k in ema if not torch.equal(ema[k], final[k])]
    assert moved  # the average is not the last weights
    for key, value in ema.items():
        assert torch.allclose(value.double(), expected[key], atol=1e-6), key
    AutoModelForCausalLM.from_pretrained(out / "ema")

    assert main(["train", str(config), "fsdp=full_shard", f"output_dir={tmp_path / 'x'}"]) == 2
    assert "ema_decay: not supported with fsdp" in capsys.readouterr().err
