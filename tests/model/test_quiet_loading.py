"""Loading a model prints what its use needs: no deprecation warnings, parameter counts only when training."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.model_args import ModelArguments
from lmforge.model.loader import load_model

ALIAS = "`is_gradient_checkpointing` is deprecated"


def test_peft_still_reads_the_deprecated_checkpointing_name(tiny_qwen2_dir):
    """Why `lora.quiet_peft_alias` exists. Once this fails, PEFT reads the new name: delete the filter."""
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    assert any(ALIAS in str(w.message) for w in caught)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_loading_raises_no_future_warning(tiny_qwen2_dir, tmp_path, checkpointing):
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model = load_model(args, AdapterArguments.from_keys("lora", lora_rank=2), is_trainable=True,
                           gradient_checkpointing=checkpointing)
        model.save_pretrained(tmp_path / "adapter")
        # chat / api / export: the adapter is loaded and merged
        merged = ModelArguments(model_name_or_path=str(tiny_qwen2_dir), adapter_name_or_path=str(tmp_path / "adapter"))
        load_model(merged, AdapterArguments.from_keys("lora"), is_trainable=False)


@pytest.mark.parametrize("finetuning_type", ["full", "lora"])
def test_parameter_counts_are_logged_for_training_only(tiny_qwen2_dir, caplog, finetuning_type):
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir))
    with caplog.at_level(logging.INFO, logger="lmforge"):
        load_model(args, AdapterArguments.from_keys(finetuning_type), is_trainable=False)
    assert "trainable params" not in caplog.text
    with caplog.at_level(logging.INFO, logger="lmforge"):
        load_model(args, AdapterArguments.from_keys(finetuning_type), is_trainable=True)
    assert "trainable params" in caplog.text


@pytest.mark.parametrize("finetuning_type", ["full", "lora"])
def test_reward_model_checkpointing_uses_the_transformers_5_names(tmp_path, tiny_model_dir, finetuning_type):
    """The Trainer enables checkpointing through `activation_checkpointing_enable`; a value-head model with only
    the old name got a FutureWarning, then a TypeError for the keywords the Trainer passes."""
    import json

    import yaml

    from lmforge.cli import main

    pairs = [{"instruction": f"Is {i} fine?", "input": "", "chosen": "Yes.", "rejected": "No. I refuse."}
             for i in range(16)]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"pairs": {
        "file_name": "pairs.json", "ranking": True, "columns": {"prompt": "instruction", "query": "input",
                                                               "chosen": "chosen", "rejected": "rejected"}}}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "dataset_dir": str(tmp_path), "dataset": "pairs", "stage": "rm",
        "template": "qwen", "finetuning_type": finetuning_type, "output_dir": str(tmp_path / "out"),
        "data_cache_dir": str(tmp_path / "cache"), "cutoff_len": 32, "per_device_train_batch_size": 8,
        "max_steps": 2, "save_strategy": "no", "disable_tqdm": True, "gradient_checkpointing": True,
    }))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert main(["train", str(cfg)]) == 0
