"""Stage grpo's parts on a real tiny model: rollouts, their log-probs, the prompt data, the sampler, the config rules,
and one short run through `lmforge train` (metrics, completion log, a user reward file, a failing reward function)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.cli import main
from lmforge.data.collators import PromptCollator
from lmforge.data.processors.prompts import encode_prompt_row
from lmforge.data.samplers import GroupRepeatSampler
from lmforge.data.templates import resolve_template
from lmforge.train.rl.logprobs import completion_log_probs
from lmforge.inference.sampling_noise import hashed_uniform
from lmforge.train.rl.rollout import Rollout, completion_mask_of, row_seeds, sample_completions
from lmforge.types import Conversation, Message, Role


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def left_padded(tokenizer, texts: list[str]):
    rows = [{"input_ids": tokenizer(t)["input_ids"], "prompt": t, "answer": ""} for t in texts]
    return PromptCollator(tokenizer.pad_token_id)(rows)


def test_completion_log_probs_equal_the_scores_generate_sampled_from(model_and_tokenizer):
    model, tok = model_and_tokenizer
    batch = left_padded(tok, ["Say the number 7 please", "Hi"])  # different lengths: left padding matters
    with torch.no_grad():
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False,
                             max_new_tokens=6, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id])
    width = batch["input_ids"].shape[1]
    completion = out.sequences[:, width:]
    mask, truncated = completion_mask_of(completion, [tok.eos_token_id])
    rollout = Rollout(batch["input_ids"], batch["attention_mask"], completion, mask, truncated)
    expected = torch.stack([torch.log_softmax(s.float(), -1).gather(-1, completion[:, i:i + 1]).squeeze(-1)
                            for i, s in enumerate(out.scores)], 1) * mask
    for chunked in (True, False):
        logps, entropy = completion_log_probs(model, rollout, chunked=chunked, chunk_size=3, with_entropy=True)
        assert torch.allclose(logps, expected, atol=1e-4), chunked
        assert entropy.shape == expected.shape and bool((entropy >= 0).all())
    # temperature divides the logits, as the sampling distribution did
    hot, _ = completion_log_probs(model, rollout, temperature=2.0)
    expected_hot = torch.stack([torch.log_softmax(s.float() / 2.0, -1).gather(-1, completion[:, i:i + 1]).squeeze(-1)
                                for i, s in enumerate(out.scores)], 1) * mask
    assert torch.allclose(hot, expected_hot, atol=1e-4)


def test_rollouts_are_a_function_of_their_seed_only(model_and_tokenizer):
    model, tok = model_and_tokenizer
    batch = left_padded(tok, ["Hello there", "Count to three", "Hi"])
    ids, mask = batch["input_ids"].repeat_interleave(4, 0), batch["attention_mask"].repeat_interleave(4, 0)
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}

    def sample(seed):
        return sample_completions(model, ids, mask, max_new_tokens=8, sampling=sampling, stop_ids=[tok.eos_token_id],
                                  pad_id=tok.pad_token_id, seeds=row_seeds(seed, 0, 0, ids.shape[0]))

    first = sample(11)
    torch.rand(100)  # whatever else draws from the global RNG in between
    again = sample(11)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert not torch.equal(first.completion_ids, sample(12).completion_ids)
    # a row's completion does not depend on the rows beside it, nor on the padding they impose: the shortest
    # prompt's 4 rows, sampled alone without its left padding, draw what they drew in the batch
    unpadded = int(mask[8].sum())
    alone = sample_completions(model, ids[8:, -unpadded:], mask[8:, -unpadded:], max_new_tokens=8,
                               sampling=sampling, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id,
                               seeds=row_seeds(11, 0, 0, ids.shape[0])[8:])
    assert unpadded < ids.shape[1]
    width = alone.completion_ids.shape[1]
    assert torch.equal(alone.completion_ids, first.completion_ids[8:, :width])
    assert first.completion_ids.shape[0] == 12 and first.lengths.max() <= 8
    # tokens after a row's stop token are padding and outside the mask
    for row, length in zip(first.completion_ids, first.lengths.tolist()):
        assert bool((row[length:] == tok.pad_token_id).all())


def test_seeded_sampling_draws_from_the_softmax():
    """Gumbel-max with hashed uniforms: over many seeds the argmax frequencies match softmax(logits)."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    seeds = torch.arange(20000, dtype=torch.int64)
    uniform = hashed_uniform(seeds, 7, 4)
    assert bool(((uniform > 0) & (uniform < 1)).all())
    picks = (logits + -torch.log(-torch.log(uniform)).float()).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / len(seeds)
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.01)
    assert not torch.equal(hashed_uniform(seeds[:5], 7, 4), hashed_uniform(seeds[:5], 8, 4))  # positions differ


def test_completion_mask_stops_after_the_first_stop_token():
    ids = torch.tensor([[5, 9, 2, 7], [5, 6, 7, 8], [2, 2, 3, 4]])
    mask, truncated = completion_mask_of(ids, [2])
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_prompt_rows_keep_the_reference_answer_and_cut_the_start(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = resolve_template("qwen", tok, None)
    conv = Conversation([Message(Role.USER, "What is 2+3?"), Message(Role.ASSISTANT, "#### 5")], "Be brief.")
    row = encode_prompt_row(conv, template, tok, cutoff_len=1000)
    assert row["answer"] == "#### 5" and row["prompt"] == "What is 2+3?" and not row["truncated"]
    prompt_only = Conversation([Message(Role.USER, "What is 2+3?")], "Be brief.")
    assert row["input_ids"] == template.encode_prompt(tok, prompt_only)
    cut = encode_prompt_row(conv, template, tok, cutoff_len=5)
    assert cut["truncated"] and cut["input_ids"] == row["input_ids"][-5:]  # the assistant header survives


def test_group_repeat_sampler_keeps_groups_and_repeats_steps():
    sampler = GroupRepeatSampler(10, generations=3, prompts_per_step=4, iterations=2, seed=1)
    order = list(sampler)
    assert len(order) == len(sampler) == 2 * 4 * 3 * 2  # 2 whole steps; the 2 leftover prompts wait for another epoch
    per_step = 4 * 3
    for step in range(2):
        first, second = order[2 * step * per_step:(2 * step + 1) * per_step], order[(2 * step + 1) * per_step:(2 * step + 2) * per_step]
        assert first == second  # the step's prompts again, for the reused rollout
        assert all(first[i] == first[i - i % 3] for i in range(per_step))  # each prompt 3 times in a row
    assert order == list(GroupRepeatSampler(10, generations=3, prompts_per_step=4, iterations=2, seed=1))
    sampler.set_epoch(1)
    assert list(sampler) != order


# -- through `lmforge train` -----------------------------------------------------------------------------------

REWARDS = '''
def says_seven(prompts, completions, answer, **columns):
    return [1.0 if "7" in c else 0.0 for c in completions]

def odd(prompts, completions, **columns):
    return [float(len(c) % 3) for c in completions]

def broken(prompts, completions, **columns):
    if any("number 3" in p for p in prompts):
        raise ValueError("cannot score this one")
    return [0.0] * len(completions)
'''


@pytest.fixture
def grpo_dir(tmp_path):
    root = tmp_path / "grpo"
    root.mkdir()
    rows = [{"instruction": f"Say the number {i}", "input": "", "output": f"#### {i}"} for i in range(16)]
    (root / "numbers.json").write_text(json.dumps(rows))
    (root / "dataset_info.json").write_text(json.dumps({"numbers": {"file_name": "numbers.json"}}))
    (root / "rewards.py").write_text(REWARDS)
    return root


def grpo_config(tmp_path, model_dir, data_dir, **extra) -> Path:
    keys = {"stage": "grpo", "model_name_or_path": str(model_dir), "dataset_dir": str(data_dir), "dataset": "numbers",
            "template": "qwen", "output_dir": str(tmp_path / "out"), "data_cache_dir": str(tmp_path / "cache"),
            "cutoff_len": 64, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 6,
            "learning_rate": 1e-3, "max_steps": 2, "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True,
            "seed": 0, "finetuning_type": "lora", "lora_rank": 4,
            "reward_funcs": ["accuracy", f"{data_dir / 'rewards.py'}:says_seven"]}
    keys.update(extra)
    path = data_dir / "grpo.yaml"
    path.write_text(yaml.safe_dump(keys))
    return path


def test_grpo_run_logs_every_metric_and_the_completions(tmp_path, tiny_model_dir, grpo_dir):
    config = grpo_config(tmp_path, tiny_model_dir, grpo_dir, beta=0.04, log_completions=True, plot_loss=True,
                         num_iterations=2, loss_type="grpo", max_steps=3)
    assert main(["train", str(config)]) == 0
    out = tmp_path / "out"
    logs = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    step = next(r for r in logs if r.get("step") == 1 and "reward" in r)
    for key in ("reward", "reward_std", "rewards/accuracy/mean", f"rewards/{grpo_dir / 'rewards.py'}:says_seven/mean",
                "advantages/abs_mean", "frac_reward_zero_std", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean",
                "entropy", "completions/mean_length", "completions/max_length", "completions/clipped_ratio",
                "time/rollout_s", "time/train_s", "rollout_tokens_per_s"):
        assert key in step, key
    assert 0 <= step["frac_reward_zero_std"] <= 1 and step["completions/max_length"] <= 6
    records = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    # num_iterations 2: rollouts at steps 0 and 2; step 1 reused step 0's (the ratio against its kept log-probs)
    assert len(records) == 8 * 2 and {r["step"] for r in records} == {0, 2}
    assert records[0]["answer"].startswith("#### ") and "accuracy" in records[0]["rewards"]
    rewarded = [r["step"] for r in logs if "reward" in r]
    assert rewarded == [1, 3]
    assert (out / "adapter_model.safetensors").is_file() and (out / "training_reward.png").is_file()


def test_a_reward_function_that_raises_stops_the_run_with_its_name_and_prompt(tmp_path, tiny_model_dir, grpo_dir,
                                                                              capsys):
    config = grpo_config(tmp_path, tiny_model_dir, grpo_dir, max_steps=8,
                         reward_funcs=[f"{grpo_dir / 'rewards.py'}:broken"])
    assert main(["train", str(config)]) != 0
    err = capsys.readouterr().err
    assert "broken" in err and "cannot score this one" in err and "Say the number 3" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    ({"per_device_train_batch_size": 6}, "must be a multiple of num_generations (4)"),
    ({"reward_funcs": None}, "stage grpo needs rewards"),
    ({"reward_weights": [1.0]}, "reward_weights has 1 weights for 2 rewards"),
    ({"num_iterations": 3, "save_strategy": "steps", "save_steps": 4}, "save_steps (4) must be a multiple of num_iterations, 3"),
    ({"ppo_epochs": 2}, "the ppo_* keys apply to stage ppo"),
    ({"stage": "sft", "reward_funcs": ["accuracy"]}, "'reward_funcs' apply to stage grpo or ppo, not 'sft'"),
    ({"num_generations": 1}, "'num_generations' must be"),
    ({"loss_type": "ppo"}, "loss_type"),
    ({"use_vllm": True}, "use_vllm: rollouts through vLLM are not implemented yet"),
])
def test_config_mistakes_are_named(tmp_path, tiny_model_dir, grpo_dir, capsys, extra, message):
    config = grpo_config(tmp_path, tiny_model_dir, grpo_dir, **extra)
    assert main(["train", str(config)]) != 0
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_grpo_trains_full_and_freeze_with_a_frozen_reference(tmp_path, tiny_model_dir, grpo_dir, method):
    from safetensors.torch import load_file

    extra = {"freeze_trainable_layers": 1} if method == "freeze" else {}
    config = grpo_config(tmp_path, tiny_model_dir, grpo_dir, finetuning_type=method, beta=0.04, max_steps=2, **extra,
                         learning_rate=1e-2, reward_funcs=[f"{grpo_dir / 'rewards.py'}:odd"])
    assert main(["train", str(config)]) == 0
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "nothing trained"
    last_layer = max(int(n.split(".")[2]) for n in before if n.startswith("model.layers."))
    if method == "freeze":  # freeze_trainable_layers 1: the last block alone trains
        assert all(n.startswith(f"model.layers.{last_layer}.") for n in changed), sorted(changed)
    logs = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    assert any(r.get("kl", 0) > 0 for r in logs)  # the policy moved away from its frozen copy


def test_adapter_merged_for_a_rollout_then_the_base_restored_bit_for_bit(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from lmforge.train.rl.rollout import adapter_merged

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    ids = torch.tensor([[5, 9, 13, 2, 7]])
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with adapter_merged(model):
            merged = model(input_ids=ids).logits
            moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert moved  # the adapter really was folded into the base weights
    assert torch.allclose(merged, unmerged, atol=1e-4)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, unmerged)  # unmerged again, exactly as before


def test_grpo_adds_a_reward_models_score_with_its_weight(tmp_path, tiny_model_dir, grpo_dir):
    from lmforge.config.model_args import ModelArguments
    from lmforge.model.value_head import ValueHeadModel
    from lmforge.train.rl.reward_model import RewardModelScorer

    torch.manual_seed(0)
    ValueHeadModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).save_pretrained(tmp_path / "rm")
    config = grpo_config(tmp_path, tiny_model_dir, grpo_dir, reward_model=str(tmp_path / "rm"), max_steps=1,
                         reward_funcs=[f"{grpo_dir / 'rewards.py'}:odd"], reward_weights=[1.0, 0.5],
                         log_completions=True)
    assert main(["train", str(config)]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    for r in records:  # total = 1.0 x odd + 0.5 x the reward model's score
        parts = r["rewards"]
        assert r["reward"] == pytest.approx(parts[f"{grpo_dir / 'rewards.py'}:odd"] + 0.5 * parts["reward_model"],
                                            abs=1e-5)
    # the score is the value at the last real token of prompt + completion, as stage rm trained it
    scorer = RewardModelScorer.load(str(tmp_path / "rm"), ModelArguments(model_name_or_path=str(tiny_model_dir)),
                                    policy_vocab=10)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("Hello there")["input_ids"]
    padded = Rollout(torch.tensor([[tok.pad_token_id] * 2 + ids[:3]]), torch.tensor([[0, 0, 1, 1, 1]]),
                     torch.tensor([ids[3:] + [tok.pad_token_id]]), torch.tensor([[1] * len(ids[3:]) + [0]]),
                     torch.tensor([False]))
    with torch.no_grad():
        plain = scorer.model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0, -1]
    assert scorer(padded)[0] == pytest.approx(float(plain), abs=1e-5)


def test_prompts_follow_the_thinking_setting_of_the_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    conv = Conversation([Message(Role.USER, "What is 2+3?"), Message(Role.ASSISTANT, "5")])
    thinking = encode_prompt_row(conv, resolve_template("qwen3", tok, True), tok, 1000)
    direct = encode_prompt_row(conv, resolve_template("qwen3", tok, False), tok, 1000)
    assert thinking["input_ids"] != direct["input_ids"]
    # enable_thinking: false pre-fills an empty think block after the assistant header, as Qwen3's template does
    assert tok.decode(direct["input_ids"]).endswith("<think>\n\n</think>\n\n")
    assert direct["answer"] == thinking["answer"] == "5"
