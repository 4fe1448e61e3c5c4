"""`max_tokens_per_batch`: batches of as many samples as fit the budget once padded, each sample once per epoch."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from lmforge.cli import main
from lmforge.data.samplers import TokenBudgetBatchSampler


def test_batches_fit_the_budget_and_cover_every_sample_once_per_epoch():
    rng = random.Random(0)
    lengths = [rng.randint(3, 64) for _ in range(500)]
    sampler = TokenBudgetBatchSampler(lengths, 256, seed=7, window=64)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert all(len(b) * max(lengths[i] for i in b) <= 256 for b in batches)
        # greedy within a length-sorted window: adding the next sample would overflow (except the window's last)
        full = sum(len(b) * max(lengths[i] for i in b) for b in batches) / (256 * len(batches))
        assert full > 0.8, full
    first, again = TokenBudgetBatchSampler(lengths, 256, seed=7, window=64), TokenBudgetBatchSampler(lengths, 256, seed=7, window=64)
    assert list(first) == list(again)  # deterministic for a seed and epoch (exact resume)
    again.set_epoch(1)
    assert list(first) != list(again)  # another order each epoch


def test_a_sample_longer_than_the_budget_is_refused():
    with pytest.raises(ValueError, match="a sample of 70 tokens exceeds max_tokens_per_batch=64"):
        TokenBudgetBatchSampler([10, 70], 64)


def test_training_with_a_token_budget_takes_the_samplers_batches(tmp_path, tiny_model_dir, data_dir):
    """One epoch of sft under max_tokens_per_batch: optimizer steps = the sampler's batch count for the
    tokenized lengths, and no batch exceeds the budget (checked through the logged token totals)."""
    from lmforge.config import load_config
    from lmforge.data.pipeline import build_datasets
    from lmforge.data.templates import resolve_template
    from lmforge.model.tokenizer import load_tokenizer

    keys = {"model_name_or_path": str(tiny_model_dir), "dataset_dir": str(data_dir), "dataset": "numbers,chats",
            "template": "qwen", "stage": "sft", "finetuning_type": "lora", "cutoff_len": 64,
            "output_dir": str(tmp_path / "out"), "data_cache_dir": str(tmp_path / "cache"),
            "max_tokens_per_batch": 256, "num_train_epochs": 1, "learning_rate": 1e-3, "logging_steps": 1,
            "save_strategy": "no", "disable_tqdm": True, "seed": 5}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(keys))
    cfg = load_config(path)
    tokenizer = load_tokenizer(cfg.model)
    data = build_datasets(cfg.data, "sft", tokenizer, resolve_template("qwen", tokenizer), seed=5)
    lengths = [len(ids) for ids in data.train["input_ids"]]
    expected = TokenBudgetBatchSampler(lengths, 256, seed=5)

    assert main(["train", str(path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == len(expected) == rows[-1]["total_steps"]
    assert len(expected) < len(lengths) / 2  # several samples per batch, not one
    # throughput/tokens_total counts real tokens: every sample trained exactly once
    assert rows[-1]["throughput/tokens_total"] == sum(lengths)
