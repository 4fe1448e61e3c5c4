"""The tiny run the check tests share: trained once per session."""

from __future__ import annotations

import json

import pytest
import yaml

from lmforge.cli import main


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_model_dir):
    """A tiny sft LoRA run (2 steps) with a val_size split, trained through `lmforge train`."""
    root = tmp_path_factory.mktemp("check_run")
    data = [{"instruction": f"Say the number {i}", "input": "", "output": f"The number is {i}."} for i in range(24)]
    (root / "numbers.json").write_text(json.dumps(data))
    cfg = root / "train.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "dataset": str(root / "numbers.json"), "template": "qwen",
        "stage": "sft", "finetuning_type": "lora", "output_dir": str(root / "out"), "cutoff_len": 64,
        "data_cache_dir": str(root / "cache"), "val_size": 6, "per_device_train_batch_size": 4, "max_steps": 2,
        "save_strategy": "no", "disable_tqdm": True, "report_to": "none", "seed": 42}))
    assert main(["train", str(cfg)]) == 0
    return root / "out"
