"""The planner's arithmetic on worked examples (issue 8, line 4): bytes per parameter, ZeRO, activations, MFU."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.planner.activations import textbook_activation_elements
from lmforge.planner.memory import Setup, estimate_memory, max_micro_batch
from lmforge.planner.shape import load_shape
from lmforge.planner.timing import parse_bytes, parse_count, parse_duration, run_mfu, train_seconds

# Qwen2.5-1.5B's config.json (the fields that shape the model), written here: nothing comes from the hub.
QWEN25_15B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    "hidden_act": "silu", "use_sliding_window": False, "torch_dtype": "bfloat16",
}
QWEN25_15B_PARAMS = 1_543_714_304  # embeddings 233,373,696 + 28 x 46,797,824 + final norm 1,536


@pytest.fixture(scope="module")
def qwen_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen25") / "config.json"
    path.write_text(json.dumps(QWEN25_15B))
    return path


@pytest.fixture(scope="module")
def qwen_full(qwen_config):
    return load_shape(qwen_config, AdapterArguments(finetuning_type="full"))


def states_per_param(shape, setup):
    plan = estimate_memory(shape, setup)
    return (plan.weights + plan.gradients + plan.optimizer) / shape.total_params


def test_parameter_count_from_the_config_alone(qwen_full, qwen_config):
    assert qwen_full.total_params == QWEN25_15B_PARAMS
    assert round(qwen_full.total_params / 1e9, 2) == 1.54
    assert qwen_full.trainable_params == QWEN25_15B_PARAMS
    assert load_shape(qwen_config.parent).total_params == QWEN25_15B_PARAMS  # a directory works too


@pytest.mark.parametrize("zero", [None, 0])
def test_mixed_precision_adam_costs_16_bytes_per_parameter(qwen_full, zero):
    setup = Setup(dtype="bf16", optimizer="adamw_torch", zero=zero)
    plan = estimate_memory(qwen_full, setup)
    assert plan.weights + plan.gradients + plan.optimizer == 16 * QWEN25_15B_PARAMS  # 24.7 GB before activations
    if zero is None:  # HF Trainer: fp32 weights 4 + fp32 grads 4 + Adam m, v 8
        assert (plan.weights, plan.gradients, plan.optimizer) == tuple(b * QWEN25_15B_PARAMS for b in (4, 4, 8))
    else:  # DeepSpeed: bf16 weights 2 + bf16 grads 2 + fp32 master, m, v 12
        assert (plan.weights, plan.gradients, plan.optimizer) == tuple(b * QWEN25_15B_PARAMS for b in (2, 2, 12))


def test_zero_stages_divide_by_the_device_count(qwen_full):
    per_param = {stage: states_per_param(qwen_full, Setup(zero=stage, devices=8)) for stage in (0, 1, 2, 3)}
    assert per_param[0] == pytest.approx(16)
    assert per_param[1] == pytest.approx(2 + 2 + 12 / 8)
    assert per_param[2] == pytest.approx(2 + 14 / 8)  # 3.75 bytes per parameter
    assert per_param[3] == pytest.approx(16 / 8)
    offloaded = estimate_memory(qwen_full, Setup(zero=2, devices=8, offload="optimizer"))
    assert offloaded.optimizer == 0 and offloaded.host == pytest.approx(12 / 8 * QWEN25_15B_PARAMS)


def test_fp32_and_8bit_optimizers(qwen_full):
    assert states_per_param(qwen_full, Setup(dtype="fp32")) == pytest.approx(16)  # 4 + 4 + 8, no master copy
    assert states_per_param(qwen_full, Setup(dtype="bf16", optimizer="adamw_8bit")) == pytest.approx(10)
    assert states_per_param(qwen_full, Setup(dtype="bf16", optimizer="sgd")) == pytest.approx(8)


def test_lora_trains_only_the_adapters(qwen_config):
    lora = load_shape(qwen_config, AdapterArguments("lora", LoraArguments(lora_rank=8)))
    # r x (in + out) for q, k, v, o (1536->1536, 1536->256 x2, 1536->1536) and gate, up, down (1536<->8960)
    per_layer = 8 * ((1536 + 1536) * 2 + (1536 + 256) * 2 + (1536 + 8960) * 3)
    assert lora.trainable_params == 28 * per_layer == 9_232_384
    plan = estimate_memory(lora, Setup(dtype="bf16"))
    # GPU: the base stays bf16 (2 bytes), adapters fp32 (4) with fp32 grads and Adam states
    assert plan.weights == 2 * QWEN25_15B_PARAMS + 4 * lora.trainable_params
    assert plan.gradients == 4 * lora.trainable_params and plan.optimizer == 8 * lora.trainable_params


def test_textbook_activation_elements(qwen_full):
    """Per layer 8h + 4f elements per token and two [heads, s, s] tensors; h more for the final norm.

    The issue writes the s^2 term as 56·b·s^2 = 2 x 28 layers: that drops the 12 heads. The scores and
    probabilities are [b, heads, s, s] each (GQA shares K/V, not the scores), so the term is
    2 x 12 x 28 = 672·b·s^2; test_activations.py measures the head factor on real layers.
    """
    per_token, per_square = textbook_activation_elements(qwen_full)
    assert per_token == 28 * (8 * 1536 + 4 * 8960) + 1536 == 1_349_120
    assert per_square == 2 * 12 * 28 == 672
    assert textbook_activation_elements(qwen_full, fused_attention=True) == (1_349_120, 0)


def test_mfu_of_famous_runs():
    llama = run_mfu(flops_per_token=6 * 65e9, tokens=1.4e12, seconds=21 * 86400, devices=2048, peak_flops=312e12)
    gpt3 = run_mfu(flops_per_token=6 * 175e9, tokens=300e9, seconds=30 * 86400, devices=1024, peak_flops=312e12)
    assert llama == pytest.approx(0.471, abs=5e-4)
    assert gpt3 == pytest.approx(0.380, abs=5e-4)
    days = train_seconds(flops_per_token=6 * 65e9, tokens=1.4e12, devices=2048, peak_flops=312e12, mfu=llama) / 86400
    assert days == pytest.approx(21)


def test_largest_micro_batch_is_the_last_that_fits(qwen_full):
    setup = Setup(seq_len=2048, dtype="bf16", gradient_checkpointing=True)
    limit = 80 * 2**30
    best = max_micro_batch(qwen_full, setup, limit)
    assert best > 1
    from dataclasses import replace

    assert estimate_memory(qwen_full, replace(setup, micro_batch=best)).total <= limit
    assert estimate_memory(qwen_full, replace(setup, micro_batch=best + 1)).total > limit
    assert max_micro_batch(qwen_full, setup, 10 * 2**30) == 0  # 24.7 GB of states alone


def test_units_and_counts_parse():
    assert parse_count("1.4T", "x") == 1.4e12 and parse_count("300B", "x") == 3e11 and parse_count("65e9", "x") == 65e9
    assert parse_duration("21d", "x") == 21 * 86400 and parse_duration("1d12h", "x") == 1.5 * 86400
    assert parse_bytes("80GiB", "x") == 80 * 2**30 and parse_bytes("80GB", "x") == 80e9 and parse_bytes("24", "x") == 24 * 2**30
    from lmforge.errors import ConfigError

    for bad in (lambda: parse_count("lots", "--tokens"), lambda: parse_duration("3 weeks", "--time"),
                lambda: parse_bytes("80 gigs", "--device-memory")):
        with pytest.raises(ConfigError):
            bad()


# --- online RL (grpo, ppo): rollout KV cache, reference and reward models (planner/stage_memory.py) -------------

# The tiny-qwen2 preset (model/presets.py) with its tokenizer's 1024-token vocabulary.
TINY_QWEN2 = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 176, "max_position_embeddings": 4096,
              "tie_word_embeddings": True, "vocab_size": 1024}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    from lmforge.model.presets import PRESETS

    assert {k: v for k, v in TINY_QWEN2.items() if k not in ("model_type", "vocab_size")} == PRESETS.get("tiny-qwen2").config
    path = tmp_path_factory.mktemp("tiny_qwen2") / "config.json"
    path.write_text(json.dumps(TINY_QWEN2))
    return path


def _rl_setup(stage, base, **rl):
    from lmforge.config.generation_args import GenerationArguments
    from lmforge.config.rl_args import RLArguments
    from lmforge.planner.stage_memory import for_stage
    from lmforge.stages import STAGES

    return for_stage(base, STAGES.get(stage), rl=RLArguments(**rl), generation=GenerationArguments(max_new_tokens=96))


def _lines(plan):
    return {line.name: line for line in plan.extras}


def test_grpo_adds_exactly_the_rollout_kv_cache(tiny_config):
    shape = load_shape(tiny_config)
    base = Setup(seq_len=128, micro_batch=8, dtype="bf16")
    grpo = _rl_setup("grpo", base, max_completion_length=64, beta=0.0)
    assert grpo.completion_len == 64 and not grpo.reference
    # 2 (K, V) x 2 layers x 2 KV heads x head_dim 16 x (128 + 64) tokens x 8 completions x 2 bytes (bf16)
    by_hand = 2 * 2 * 2 * 16 * 192 * 8 * 2
    assert by_hand == 393_216
    plain = estimate_memory(shape, replace(base, seq_len=192))  # same training rows, no rollout
    plan = estimate_memory(shape, grpo)
    assert _lines(plan)["rollout KV cache"].bytes == by_hand
    assert plan.total - plain.total == by_hand
    assert plan.activations == plain.activations  # trains over prompt + completion
    assert plan.static == plain.static  # the cache grows with the batch


def test_grpo_reference_only_with_beta_and_not_under_lora(tiny_config):
    full = load_shape(tiny_config)
    base = Setup(seq_len=128, micro_batch=8, dtype="bf16")
    no_ref = estimate_memory(full, _rl_setup("grpo", base, beta=0.0))
    with_ref = estimate_memory(full, _rl_setup("grpo", base, beta=0.04))
    assert "reference model" not in _lines(no_ref)
    assert _lines(with_ref)["reference model"].bytes == 2 * full.total_params  # a bf16 frozen copy
    assert with_ref.total - no_ref.total == 2 * full.total_params

    lora = load_shape(tiny_config, AdapterArguments("lora", LoraArguments(lora_rank=8)))
    lora_no_ref = estimate_memory(lora, _rl_setup("grpo", base, beta=0.0))
    lora_ref = estimate_memory(lora, _rl_setup("grpo", base, beta=0.04))
    assert _lines(lora_ref)["reference model"].bytes == 0  # the policy with its adapter off
    assert lora_ref.total == lora_no_ref.total


def test_ppo_keeps_reference_reward_model_and_value_head(tiny_config):
    full = load_shape(tiny_config)
    base = Setup(seq_len=128, micro_batch=4, dtype="bf16")
    ppo = _rl_setup("ppo", base, reward_model="saves/rm")
    assert ppo.completion_len == 96  # the generation group's max_new_tokens
    lines = _lines(estimate_memory(full, ppo))
    assert lines["rollout KV cache"].bytes == 2 * 2 * 2 * 16 * (128 + 96) * 4 * 2
    assert lines["reference model"].bytes == lines["reward model"].bytes == 2 * full.total_params
    assert lines["value head"].bytes == 16 * 65 and "negligible" in lines["value head"].note
    unknown = _lines(estimate_memory(full, _rl_setup("ppo", base)))["reward model"]
    assert unknown.bytes == 0 and "NOT counted" in unknown.note


def test_offline_stages_add_no_rollout(tiny_config):
    shape = load_shape(tiny_config)
    base = Setup(seq_len=128, micro_batch=4)
    for stage in ("pt", "sft", "rm"):
        setup = _rl_setup(stage, base)
        assert setup == base and estimate_memory(shape, setup).extras == ()


def test_for_stage_reads_the_spec_not_the_name(tiny_config):
    """A stage declared only here (never registered) gets its lines from its `Stage` fields alone."""
    from lmforge.config.generation_args import GenerationArguments
    from lmforge.config.rl_args import RLArguments
    from lmforge.planner.stage_memory import for_stage
    from lmforge.stages import Stage

    toy = Stage("toy_rl", "tests:none", data_kind="prompt", collator="prompt", samples_rollouts=True,
                completion_length_key="max_new_tokens", always_reference=True, value_head=True)
    setup = for_stage(Setup(seq_len=128, micro_batch=2), toy, rl=RLArguments(beta=0.0),
                      generation=GenerationArguments(max_new_tokens=32))
    assert (setup.completion_len, setup.reference, setup.reward_model, setup.value_head) == (32, True, "none", True)
    names = [line.name for line in estimate_memory(load_shape(tiny_config), setup).extras]
    assert names == ["rollout KV cache", "reference model", "value head"]
