"""`lmforge train` end to end through `main(argv)`: pt and sft with each finetuning type."""

from __future__ import annotations

import json

import pytest
import yaml
from transformers import AutoModelForCausalLM

from lmforge.cli import main


def write_cfg(tmp_path, **keys) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(keys))
    return str(path)


def base_keys(tmp_path, model_dir, data_dir, **extra):
    keys = {
        "model_name_or_path": str(model_dir),
        "dataset_dir": str(data_dir),
        "output_dir": str(tmp_path / "out"),
        "data_cache_dir": str(tmp_path / "cache"),
        "cutoff_len": 64,
        "per_device_train_batch_size": 8,
        "learning_rate": 1.0e-3,
        "max_steps": 6,
        "logging_steps": 2,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    keys.update(extra)
    return keys


def log_rows(out):
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_sft_lora_trains_evaluates_and_saves(tmp_path, tiny_model_dir, data_dir):
    cfg = write_cfg(
        tmp_path,
        **base_keys(
            tmp_path, tiny_model_dir, data_dir,
            stage="sft", finetuning_type="lora", dataset="numbers,chats", template="qwen",
            val_size=0.2, eval_strategy="steps", eval_steps=3, plot_loss=True,
        ),
    )
    assert main(["train", cfg]) == 0
    out = tmp_path / "out"
    rows = log_rows(out)
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert len(eval_rows) >= 2
    assert all(r["loss"] > 0 and "lr" in r for r in train_rows)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "training_loss.png").stat().st_size > 10_000
    info = json.loads((out / "lmforge_run.json").read_text())
    assert info["template"] == "qwen" and info["finetuning_type"] == "lora"

    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, out)  # loadable by plain peft
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


@pytest.mark.parametrize("finetuning_type", ["full", "freeze"])
def test_sft_full_and_freeze_lower_the_loss(tmp_path, tiny_model_dir, data_dir, finetuning_type):
    cfg = write_cfg(
        tmp_path,
        **base_keys(tmp_path, tiny_model_dir, data_dir, stage="sft", finetuning_type=finetuning_type,
                    dataset="numbers", template="qwen", max_steps=12, learning_rate=3e-3),
    )
    assert main(["train", cfg]) == 0
    losses = [r["loss"] for r in log_rows(tmp_path / "out") if "loss" in r]
    assert losses[-1] < losses[0] * 0.9
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # plain transformers loads it
    assert model.config.model_type == "qwen2"


def test_pt_packs_corpus_and_trains(tmp_path, tiny_model_dir, data_dir, caplog):
    cfg = write_cfg(
        tmp_path,
        **base_keys(tmp_path, tiny_model_dir, data_dir, stage="pt", finetuning_type="full", dataset="corpus",
                    cutoff_len=32, max_steps=4),
    )
    assert main(["train", cfg]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert len([r for r in log_rows(tmp_path / "out") if "loss" in r]) == 2


def test_second_run_uses_cache_and_changed_arg_retokenizes(tmp_path, tiny_model_dir, data_dir, caplog):
    keys = base_keys(tmp_path, tiny_model_dir, data_dir, stage="sft", dataset="numbers", template="qwen",
                     max_steps=1, overwrite_output_dir=True)
    cfg = write_cfg(tmp_path, **keys)
    with caplog.at_level("INFO", logger="lmforge"):
        assert main(["train", cfg]) == 0
        assert "tokenized dataset cached at" in caplog.text
        caplog.clear()
        assert main(["train", cfg]) == 0
        assert "loaded tokenized dataset from cache" in caplog.text
        caplog.clear()
        assert main(["train", cfg, "cutoff_len=32"]) == 0
        assert "loaded tokenized dataset from cache" not in caplog.text
        assert "tokenized dataset cached at" in caplog.text


def test_resume_from_latest_checkpoint(tmp_path, tiny_model_dir, data_dir):
    keys = base_keys(tmp_path, tiny_model_dir, data_dir, stage="sft", dataset="numbers", template="qwen",
                     finetuning_type="lora", max_steps=4, save_strategy="steps", save_steps=2)
    cfg = write_cfg(tmp_path, **keys)
    assert main(["train", cfg, "max_steps=2"]) == 0
    assert (tmp_path / "out" / "checkpoint-2").is_dir()
    assert not (tmp_path / "out" / ".staging").exists()  # no empty staging folder left in output_dir
    assert main(["train", cfg]) == 2  # checkpoints exist and neither resume nor overwrite was asked
    assert main(["train", cfg, "resume_from_checkpoint=true"]) == 0
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [r["step"] for r in log_rows(tmp_path / "out") if "loss" in r]
    assert steps == sorted(set(steps))  # no duplicated lines after resuming


def test_parallel_tokenization_and_tokenized_path_give_the_same_tokens(tmp_path, tiny_model_dir, data_dir, caplog):
    from datasets import load_from_disk

    keys = base_keys(tmp_path, tiny_model_dir, data_dir, stage="sft", dataset="numbers,chats", template="qwen",
                     max_steps=1, overwrite_output_dir=True)
    serial = tmp_path / "serial"
    parallel = tmp_path / "parallel"
    cfg = write_cfg(tmp_path, **keys)
    assert main(["train", cfg, f"tokenized_path={serial}"]) == 0
    assert main(["train", cfg, f"tokenized_path={parallel}", "preprocessing_num_workers=2", "overwrite_cache=true"]) == 0
    a, b = load_from_disk(str(serial))["train"], load_from_disk(str(parallel))["train"]
    assert len(a) == 60 and a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
    with caplog.at_level("INFO", logger="lmforge"):
        assert main(["train", cfg, f"tokenized_path={serial}", "dataset_dir=/nonexistent"]) == 0
    assert "loaded tokenized dataset from tokenized_path" in caplog.text


def test_sft_packing_trains_on_isolated_rows(tmp_path, tiny_model_dir, data_dir, caplog):
    cfg = write_cfg(
        tmp_path,
        **base_keys(tmp_path, tiny_model_dir, data_dir, stage="sft", dataset="numbers,chats", template="qwen",
                    packing=True, cutoff_len=128, max_steps=3, logging_steps=1),
    )
    with caplog.at_level("INFO", logger="lmforge"):
        assert main(["train", cfg]) == 0
    assert "packing efficiency" in caplog.text and "samples isolated" in caplog.text
    rows = [r for r in log_rows(tmp_path / "out") if "loss" in r]
    assert len(rows) == 3 and all(r["throughput/padding_fraction"] < 0.2 for r in rows[1:])
