"""pure_bf16 (LLaMA-Factory's key): weights, their gradients and updates in bf16 with no fp32 master copy; the
default keeps trainable weights in fp32."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors import safe_open

from lmforge.cli import main


def run(tmp_path, model_dir, data_dir, name, **extra) -> tuple[list[float], dict]:
    cfg = dict(stage="sft", model_name_or_path=str(model_dir), dataset="numbers", dataset_dir=str(data_dir),
               template="qwen", cutoff_len=64, finetuning_type="lora", lora_rank=4, per_device_train_batch_size=8,
               max_steps=4, learning_rate=5e-3, logging_steps=1, save_strategy="no", seed=0,
               dataloader_num_workers=0, output_dir=str(tmp_path / name), report_to="none")
    cfg.update(extra)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / f"{name}.yaml")]) == 0
    rows = [json.loads(line) for line in (tmp_path / name / "trainer_log.jsonl").read_text().splitlines()]
    weights = next((tmp_path / name).glob("*.safetensors"))
    with safe_open(weights, "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    return [r["loss"] for r in rows if "loss" in r], dtypes


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_pure_bf16_trains_and_saves_bf16_weights(tmp_path, tiny_model_dir, data_dir, finetuning_type):
    losses, dtypes = run(tmp_path, tiny_model_dir, data_dir, "pure", pure_bf16=True, finetuning_type=finetuning_type)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert dtypes == {"torch.bfloat16"}
    _, default_dtypes = run(tmp_path, tiny_model_dir, data_dir, "default", finetuning_type=finetuning_type)
    assert default_dtypes == {"torch.float32"}  # the default: trainable weights kept (and saved) in fp32


def test_pure_bf16_with_fp16_is_one_line(tmp_path, tiny_model_dir, data_dir, capsys):
    cfg = dict(stage="sft", model_name_or_path=str(tiny_model_dir), dataset="numbers", dataset_dir=str(data_dir),
               template="qwen", output_dir=str(tmp_path / "x"), pure_bf16=True, fp16=True)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.strip() == "lmforge: error: pure_bf16: trains in bf16; remove fp16: true"
