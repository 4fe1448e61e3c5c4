"""rm, dpo and kto end to end through `lmforge train`, on a generated preference set with a learnable rule.

The rule: chosen answers agree ("Yes, the X is fine."), rejected ones refuse ("No. I refuse."). A held-out split
(val_size) is evaluated before the first step (eval_on_start) and after the last.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lmforge.cli import main

THINGS = ["apple", "river", "stone", "cloud", "table", "garden", "lamp", "bridge", "coat", "pencil", "bottle", "forest",
          "window", "engine", "letter", "basket"]


@pytest.fixture
def preference_dir(tmp_path):
    root = tmp_path / "pref"
    root.mkdir()
    pairs, feedback = [], []
    for i in range(64):
        thing = THINGS[i % len(THINGS)]
        question = f"Is the {thing} number {i} fine?"
        chosen, rejected = f"Yes, the {thing} is fine.", "No. I refuse."
        pairs.append({"instruction": question, "input": "", "chosen": chosen, "rejected": rejected})
        feedback.append({"messages": [{"role": "user", "content": question},
                                      {"role": "assistant", "content": chosen if i % 2 else rejected}],
                         "label": bool(i % 2)})
    (root / "pairs.json").write_text(json.dumps(pairs))
    (root / "feedback.json").write_text(json.dumps(feedback))
    info = {
        "pairs": {"file_name": "pairs.json", "ranking": True,
                  "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
        "feedback": {"file_name": "feedback.json", "formatting": "sharegpt",
                     "columns": {"messages": "messages", "kto_tag": "label"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                              "assistant_tag": "assistant"}},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


def config(tmp_path, model_dir, data_dir, **extra) -> str:
    keys = {
        "model_name_or_path": str(model_dir), "dataset_dir": str(data_dir), "template": "qwen",
        "output_dir": str(tmp_path / "out"), "data_cache_dir": str(tmp_path / "cache"), "cutoff_len": 64,
        "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "learning_rate": 5.0e-3,
        "max_steps": 24, "logging_steps": 4, "save_strategy": "no", "disable_tqdm": True, "seed": 0,
        "val_size": 16, "eval_strategy": "steps", "eval_steps": 24, "eval_on_start": True, "do_eval": True,
        "finetuning_type": "lora", "lora_rank": 8,
    }
    keys.update(extra)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(keys))
    return str(path)


def rows(tmp_path):
    return [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]


def test_dpo_lora_learns_the_preference_on_held_out_pairs(tmp_path, tiny_model_dir, preference_dir):
    cfg = config(tmp_path, tiny_model_dir, preference_dir, stage="dpo", dataset="pairs", pref_beta=0.1, plot_loss=True)
    assert main(["train", cfg]) == 0
    evals = [r for r in rows(tmp_path) if "eval_rewards/accuracies" in r]
    before, after = evals[0], evals[-1]
    # Before any update the policy is its own reference: every reward is exactly 0.
    assert before["step"] == 0 and before["eval_rewards/margins"] == 0 and before["eval_rewards/accuracies"] == 0
    assert after["eval_rewards/accuracies"] >= 0.9
    assert after["eval_rewards/margins"] >= 1.0
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    train = [r for r in rows(tmp_path) if "loss" in r]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected"):
        assert key in train[-1]
    assert train[-1]["rewards/margins"] == pytest.approx(
        train[-1]["rewards/chosen"] - train[-1]["rewards/rejected"], abs=1e-5)
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "training_rewards_accuracies.png").is_file() and (out / "training_loss.png").is_file()


@pytest.mark.parametrize("pref_loss", ["ipo", "simpo"])
def test_dpo_variants_train(tmp_path, tiny_model_dir, preference_dir, pref_loss):
    cfg = config(tmp_path, tiny_model_dir, preference_dir, stage="dpo", dataset="pairs", pref_loss=pref_loss,
                 pref_beta=2.0 if pref_loss == "simpo" else 0.1, max_steps=12, eval_steps=12)
    assert main(["train", cfg]) == 0
    evals = [r for r in rows(tmp_path) if "eval_rewards/accuracies" in r]
    assert evals[-1]["eval_rewards/accuracies"] >= 0.9
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]


def test_precomputed_reference_gives_the_same_training(tmp_path, tiny_model_dir, preference_dir):
    results = {}
    for precompute in (False, True):
        run = tmp_path / str(precompute)
        run.mkdir()
        cfg = config(run, tiny_model_dir, preference_dir, stage="dpo", dataset="pairs", max_steps=6, eval_steps=6,
                     precompute_ref_log_probs=precompute)
        assert main(["train", cfg]) == 0
        results[precompute] = [r["loss"] for r in rows(run) if "loss" in r]
    assert results[True] == pytest.approx(results[False], rel=1e-4)


def test_full_dpo_reference_from_ref_model_equals_the_frozen_copy(tmp_path, tiny_model_dir, preference_dir):
    # The default reference of full tuning (a frozen copy of the model as loaded) and `ref_model` naming the
    # same directory are the same model: the same losses. Hinge and orpo run here too.
    losses = {}
    for name, extra in (("copy", {}), ("ref_model", {"ref_model": str(tiny_model_dir)}),
                        ("hinge", {"pref_loss": "hinge"}), ("orpo", {"pref_loss": "orpo"})):
        run = tmp_path / name
        run.mkdir()
        cfg = config(run, tiny_model_dir, preference_dir, stage="dpo", dataset="pairs", finetuning_type="full",
                     learning_rate=1e-4, max_steps=4, logging_steps=1, eval_strategy="no", eval_on_start=False,
                     do_eval=False, val_size=0, **extra)
        assert main(["train", cfg]) == 0
        losses[name] = [r["loss"] for r in rows(run) if "loss" in r]
    assert losses["ref_model"] == pytest.approx(losses["copy"], rel=1e-6)
    assert losses["copy"][0] == pytest.approx(0.6931472, abs=1e-5)  # log 2: policy == reference at step 1
    assert losses["hinge"][0] == pytest.approx(1.0, abs=1e-5)  # relu(1 - 0)
    assert losses["orpo"][-1] < losses["orpo"][0]


def test_kto_lora_separates_desirable_from_undesirable(tmp_path, tiny_model_dir, preference_dir):
    cfg = config(tmp_path, tiny_model_dir, preference_dir, stage="kto", dataset="feedback", pref_beta=0.1)
    assert main(["train", cfg]) == 0
    evals = [r for r in rows(tmp_path) if "eval_rewards/margins" in r]
    assert evals[0]["eval_rewards/margins"] == 0 and evals[0]["eval_kl"] == 0
    assert evals[-1]["eval_rewards/margins"] >= 1.0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    train = [r for r in rows(tmp_path) if "loss" in r]
    assert "kl" in train[-1] and train[-1]["kl"] >= 0


@pytest.mark.parametrize("tuning", ["lora", "full"])
def test_reward_model_ranks_held_out_pairs_and_reloads_with_the_same_scores(
    tmp_path, tiny_model_dir, preference_dir, tuning
):
    import torch

    from lmforge.config import load_config
    from lmforge.data.collators import PairwiseCollator
    from lmforge.data.pipeline import build_datasets
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.model.value_head import load_reward_model, reward_scores
    from lmforge.data.templates import resolve_template

    lr = 2e-3 if tuning == "lora" else 5e-4
    cfg_path = config(tmp_path, tiny_model_dir, preference_dir, stage="rm", dataset="pairs", learning_rate=lr,
                      finetuning_type=tuning)
    assert main(["train", cfg_path]) == 0
    out = tmp_path / "out"
    evals = [r for r in rows(tmp_path) if "eval_accuracy" in r]
    assert evals[-1]["eval_accuracy"] >= 0.9 and evals[-1]["eval_rewards/margins"] > 1.0
    weights = "adapter_model.safetensors" if tuning == "lora" else "model.safetensors"
    assert (out / "value_head.safetensors").is_file() and (out / weights).is_file()
    final = json.loads((out / "all_results.json").read_text())

    # Load it back, score the same held-out pairs: the same mean rewards as the trainer's last evaluation.
    where = f"adapter_name_or_path={out}" if tuning == "lora" else f"model_name_or_path={out}"
    cfg = load_config(cfg_path, [where, "finetuning_type=lora" if tuning == "lora" else "finetuning_type=full"])
    tokenizer = load_tokenizer(cfg.model)
    data = build_datasets(cfg.data, "rm", tokenizer, resolve_template("qwen", tokenizer), seed=0)
    batch = PairwiseCollator(tokenizer.pad_token_id)(list(data.eval))
    model = load_reward_model(cfg.model)
    scores = reward_scores(model, batch["input_ids"], batch["attention_mask"])
    pairs = len(data.eval)
    assert float(scores[:pairs].mean()) == pytest.approx(final["eval_rewards/chosen"], abs=1e-4)
    assert float(scores[pairs:].mean()) == pytest.approx(final["eval_rewards/rejected"], abs=1e-4)
    assert float((scores[:pairs] > scores[pairs:]).float().mean()) == final["eval_accuracy"]
    assert torch.isfinite(scores).all()


# Peak RSS of the training itself: ru_maxrss would start from the forking pytest process's RSS (Linux keeps
# the high-water mark across fork and exec), which hid both runs' peaks once pytest had grown past them.
MEASURE = """
import sys
from pathlib import Path
from lmforge.cli import main
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
code = main(["train", sys.argv[1]])
hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
print("MAXRSS_KB", hwm.split()[1])
sys.exit(code)
"""


def test_lora_dpo_peak_memory_below_full_dpo(tmp_path, preference_dir):
    from lmforge.model.from_config import create_model

    # ~28M parameters (112 MB in fp32): full DPO adds a frozen reference copy, gradients and Adam states.
    model_dir = create_model("tiny-qwen2", tmp_path / "model", seed=0, overrides={
        "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
        "num_key_value_heads": 8})
    peaks = {}
    for tuning in ("lora", "full"):
        run = tmp_path / tuning
        run.mkdir()
        cfg = config(run, model_dir, preference_dir, stage="dpo", dataset="pairs", finetuning_type=tuning,
                     max_steps=2, per_device_train_batch_size=4, val_size=0, eval_strategy="no",
                     eval_on_start=False, do_eval=False, learning_rate=1e-5)
        done = subprocess.run([sys.executable, "-c", MEASURE, cfg], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[tuning] = int(done.stdout.split("MAXRSS_KB")[-1].split()[0]) / 1024
    print("peak RSS MiB", peaks)
    copy_mib = 28e6 * 4 / 2**20
    assert peaks["full"] - peaks["lora"] > copy_mib, peaks  # LoRA's reference is the policy itself: no copy
