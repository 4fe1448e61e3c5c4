"""stage ppo end to end: a tiny reward model (stage rm) that prefers answers saying "Yes", then ppo against it.

The reward model learns the rule of test_preference_e2e (chosen answers agree, "Yes, the X is fine.", rejected ones
refuse, "No. I refuse."); the tiny policy starts from random weights, so its completions are noise, and ppo must move
them toward what the reward model scores higher: the logged mean reward rises.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from lmforge.cli import main
from lmforge.data.samplers import PPORolloutSampler

THINGS = ["apple", "river", "stone", "cloud", "table", "garden", "lamp", "bridge"]


@pytest.fixture
def ppo_data_dir(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    pairs, prompts = [], []
    for i in range(32):
        question = f"Is the {THINGS[i % len(THINGS)]} number {i} fine?"
        pairs.append({"instruction": question, "input": "", "chosen": f"Yes, the {THINGS[i % len(THINGS)]} is fine.",
                      "rejected": "No. I refuse."})
        prompts.append({"instruction": question, "input": "", "output": ""})
    (root / "pairs.json").write_text(json.dumps(pairs))
    (root / "prompts.json").write_text(json.dumps(prompts))
    info = {
        "pairs": {"file_name": "pairs.json", "ranking": True,
                  "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
        "prompts": {"file_name": "prompts.json"},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


def write_config(tmp_path, name, **keys) -> str:
    base = {"template": "qwen", "data_cache_dir": str(tmp_path / "cache"), "cutoff_len": 128, "save_strategy": "no",
            "disable_tqdm": True, "seed": 0, "logging_steps": 1, "report_to": "none"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, **keys}))
    return str(path)


def log_rows(output_dir):
    return [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]


def test_ppo_without_reward_model_names_the_key(tmp_path, tiny_model_dir, ppo_data_dir, capsys):
    cfg = write_config(tmp_path, "ppo", stage="ppo", model_name_or_path=str(tiny_model_dir),
                       dataset_dir=str(ppo_data_dir), dataset="prompts", output_dir=str(tmp_path / "ppo"))
    assert main(["train", cfg]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and "reward_model" in err[-1]


def test_ppo_sampler_plan_matches_its_order():
    sampler = PPORolloutSampler(10, prompts_per_rollout=4, ppo_epochs=2, seed=3)
    yielded = list(sampler)
    assert len(yielded) == len(sampler) == 16  # two rollout batches of 4, each twice; 2 prompts left out
    for rollout in range(2):
        prompts, passes = sampler.plan(0, rollout)
        assert [sorted(p) for p in passes] == [sorted(prompts)] * 2
        assert yielded[rollout * 8:(rollout + 1) * 8] == passes[0] + passes[1]


@pytest.mark.slow
def test_ppo_raises_the_reward_model_score(tmp_path, tiny_model_dir, ppo_data_dir):
    started = time.perf_counter()
    rm_dir = tmp_path / "rm"
    rm = write_config(tmp_path, "rm", stage="rm", model_name_or_path=str(tiny_model_dir), dataset_dir=str(ppo_data_dir),
                      dataset="pairs", output_dir=str(rm_dir), finetuning_type="full", learning_rate=2.0e-3,
                      per_device_train_batch_size=8, max_steps=8)
    assert main(["train", rm]) == 0
    rm_seconds = time.perf_counter() - started
    ppo_dir = tmp_path / "ppo"
    ppo = write_config(tmp_path, "ppo", stage="ppo", model_name_or_path=str(tiny_model_dir),
                       dataset_dir=str(ppo_data_dir), dataset="prompts", output_dir=str(ppo_dir),
                       reward_model=str(rm_dir), finetuning_type="full", learning_rate=2.0e-3,
                       per_device_train_batch_size=16, gradient_accumulation_steps=1, ppo_epochs=2, max_steps=24,
                       max_new_tokens=8)
    assert main(["train", ppo]) == 0
    rows = [r for r in log_rows(ppo_dir) if "reward" in r]
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    print(f"rm {rm_seconds:.1f}s, ppo {time.perf_counter() - started - rm_seconds:.1f}s; "
          f"reward first 4 logs {first:.3f}, last 4 {last:.3f}; rewards {[round(x, 3) for x in rewards]}")
    for key in ("kl", "kl_coef", "policy_loss", "value_loss", "clipfrac", "completions/mean_length"):
        assert key in rows[-1], key
    assert (ppo_dir / "value_head.safetensors").is_file()
    assert last > first + 0.3  # seed 0 on CPU: -1.91 -> -1.18


def test_ppo_resumes_exactly_from_a_rollout_boundary(tmp_path, tiny_model_dir, ppo_data_dir, capsys):
    """Checkpoints hold the value head, the KL coefficient and the score statistics; one taken between rollout
    batches resumes to the weights of the uninterrupted run, bit for bit (the next batch samples from row seeds)."""
    from safetensors.torch import load_file

    from lmforge.model.value_head import ValueHeadModel
    from transformers import AutoModelForCausalLM

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ValueHeadModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).save_pretrained(tmp_path / "rm")
    keys = dict(stage="ppo", model_name_or_path=str(tiny_model_dir), dataset_dir=str(ppo_data_dir),
                dataset="prompts", reward_model=str(tmp_path / "rm"), finetuning_type="lora", lora_rank=4,
                per_device_train_batch_size=4, ppo_epochs=2, max_steps=6, max_new_tokens=6, learning_rate=1e-2,
                ppo_score_norm=True, save_strategy="steps", save_steps=2, lr_scheduler_type="constant")
    assert main(["train", write_config(tmp_path, "whole", output_dir=str(tmp_path / "whole"), **keys)]) == 0
    state = json.loads((tmp_path / "whole" / "checkpoint-4" / "ppo_state.json").read_text())
    assert state["kl_coef"] != 0.2 and state["score_moments"]["count"] > 1  # both moved since the start
    # a second run stopped after checkpoint-4 (max_steps 4 leaves the same checkpoint), then resumed to 6
    part = write_config(tmp_path, "part", output_dir=str(tmp_path / "part"), **{**keys, "max_steps": 4})
    assert main(["train", part]) == 0
    resumed = write_config(tmp_path, "resumed", output_dir=str(tmp_path / "part"), resume_from_checkpoint=True, **keys)
    assert main(["train", resumed]) == 0
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        whole, again = load_file(tmp_path / "whole" / name), load_file(tmp_path / "part" / name)
        assert all(torch.equal(whole[k], again[k]) for k in whole), name
    bad = write_config(tmp_path, "bad", output_dir=str(tmp_path / "bad"), **{**keys, "save_steps": 3})
    assert main(["train", bad]) != 0
    assert "save_steps (3) must be a multiple of ppo_epochs x ppo_buffer_size" in capsys.readouterr().err
