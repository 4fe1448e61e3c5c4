"""Every example YAML runs as shipped (a few steps), from the repository root, with our own data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from lmforge.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"


# Examples that train from scratch; the ones that use a trained run (predict-only: do_predict without do_train)
# run after sft_lora below.
TRAIN_EXAMPLES = sorted(p.stem for p in EXAMPLES.glob("*.yaml")
                        if "\nstage:" in p.read_text() and "\ndo_predict: true" not in p.read_text())


@pytest.mark.parametrize("name", TRAIN_EXAMPLES)
def test_example_runs(name, tmp_path, monkeypatch, tiny_model_dir):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    if "memmap" in name:  # the example's documented first step
        assert main(["tokenize", "examples/data/corpus_mini.jsonl", "--tokenizer", "models/tiny",
                     "--output", "shards/corpus_mini", "--workers", "1", "--quiet"]) == 0
    text = (EXAMPLES / f"{name}.yaml").read_text()
    if "\nreward_model:" in text:  # ppo: its documented first step trains the reward model
        assert main(["train", "examples/rm_lora.yaml", "max_steps=2", "disable_tqdm=true",
                     f"data_cache_dir={tmp_path / 'cache'}"]) == 0
    # online RL: shorter rollouts than the example's, to keep three steps quick on a CPU
    shorter = {"grpo": ["max_completion_length=16"], "ppo": ["max_new_tokens=16"]}.get(
        next((line.split(":")[1].strip() for line in text.splitlines() if line.startswith("stage:")), ""), [])
    code = main(["train", f"examples/{name}.yaml", "max_steps=3", "logging_steps=1", "eval_steps=2",
                 "disable_tqdm=true", f"data_cache_dir={tmp_path / 'cache'}", *shorter])
    assert code == 0
    out = Path(next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("output_dir:")))
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert (out / "lmforge_run.json").is_file()
    if "memmap" in name:  # in-loop perplexity on the held-out shards at eval_steps
        evals = [r for r in rows if "eval_loss" in r]
        assert evals and all(r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"])) for r in evals)


def test_chat_merge_and_predict_examples_use_the_sft_lora_run(tmp_path, monkeypatch, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "examples/sft_lora.yaml", "max_steps=2", "disable_tqdm=true",
                 f"data_cache_dir={tmp_path / 'cache'}"]) == 0
    assert main(["export", "examples/merge_lora.yaml"]) == 0
    assert AutoModelForCausalLM.from_pretrained("output/tiny_lora_sft").config.model_type == "qwen2"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("Hi\nexit\n"))
    assert main(["chat", "examples/chat.yaml", "max_new_tokens=4"]) == 0
    assert main(["train", "examples/predict_lora.yaml", "max_new_tokens=4", f"data_cache_dir={tmp_path / 'cache'}"]) == 0
    predictions = Path("saves/tiny/lora/predict/generated_predictions.jsonl").read_text().splitlines()
    results = json.loads(Path("saves/tiny/lora/predict/predict_results.json").read_text())
    assert len(predictions) == results["predict_samples"] == 33
    assert {"predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l"} <= set(results)
