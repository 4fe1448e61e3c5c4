"""FLOPs per token against hand computations and the models' own Linear layers; peaks; MFU in the callback."""

from __future__ import annotations

import math
import time

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    PhiConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from lmforge.errors import ConfigError
from lmforge.train.callbacks import ThroughputCallback, count_batch_tokens
from lmforge.train.callbacks.throughput import attention_length_sums
from lmforge.arith.flops import ModelFlops, from_config
from lmforge.arith.peak_tflops import lookup_peak_flops
from lmforge.model.flops import flops_per_token, from_modules, model_flops
from lmforge.train.peak_flops import calibrate_peak_flops, peak_flops
from lmforge.types import IGNORE_INDEX

# The tiny-qwen2 preset's shapes.
TINY = {
    "vocab_size": 1024,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 176,
}
# By hand: head_dim 64/4 = 16; q and o 64x64, k and v 64x(2x16); gate, up, down 64x176.
TINY_LAYER = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 176  # 46,080
TINY_HEAD = 1024 * 64
TINY_N = 2 * TINY_LAYER + TINY_HEAD  # 157,696


def tiny_model(config, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


# -- FLOPs per token ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_flops_per_token_tiny_qwen2_by_hand(tied):
    config = Qwen2Config(**TINY, tie_word_embeddings=tied)
    flops = from_config(config)
    assert flops.layer_params == (TINY_LAYER, TINY_LAYER)
    # Tying shares the lm_head's weights with the embedding, not its work: same N either way.
    assert flops.head_params == TINY_HEAD and flops.matmul_params == TINY_N == 157_696
    # PaLM: 6N + 12·L·(heads·head_dim)·T, no causal halving.
    assert flops_per_token(config, 100) == 6 * 157_696 + 12 * 2 * 64 * 100 == 1_099_776
    # The oracle: every matmul weight the instantiated model has, lm_head included even when tied.
    assert from_modules(tiny_model(config)).matmul_params == TINY_N


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig(**TINY),
        MistralConfig(**TINY),
        Gemma2Config(**TINY, head_dim=32),  # heads x head_dim != hidden
        PhiConfig(**TINY),  # non-gated MLP (fc1, fc2)
        GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1024, bos_token_id=0, eos_token_id=0),  # Conv1D
    ],
    ids=lambda c: c.model_type,
)
def test_config_count_matches_the_models_linear_layers(config):
    assert from_config(config).matmul_params == from_modules(tiny_model(config)).matmul_params


def test_sliding_window_layers_use_min_of_length_and_window():
    config = Gemma2Config(**TINY, head_dim=32, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    flops = from_config(config)
    assert flops.windows == (8, None) and flops.attn_dims == (128, 128)
    n = flops.matmul_params
    assert flops.per_token(20) == 6 * n + 12 * 128 * (8 + 20)
    assert flops.per_token(4) == 6 * n + 12 * 128 * (4 + 4)
    # Mistral v0.1: a sliding_window and no layer_types means every layer is windowed.
    assert from_config(MistralConfig(**TINY, sliding_window=16)).windows == (16, 16)
    assert from_config(Qwen2Config(**TINY, sliding_window=16)).windows == (None, None)  # use_sliding_window off


def test_moe_counts_routed_and_shared_experts():
    mixtral = MixtralConfig(**TINY, num_local_experts=8, num_experts_per_tok=2)
    attention = 64 * 64 + 2 * 64 * 32 + 64 * 64
    assert from_config(mixtral).layer_params == (attention + 3 * 64 * 2 * 176 + 64 * 8,) * 2  # 2 experts + router
    qwen_moe = Qwen2MoeConfig(
        **TINY,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        mlp_only_layers=[0],
    )
    assert from_config(qwen_moe).layer_params == (
        attention + 3 * 64 * 176,  # layer 0 keeps a dense MLP
        attention + 3 * 64 * (2 * 32 + 48) + 64 * 4,
    )


def test_unknown_config_falls_back_to_the_models_linears():
    config = Qwen2Config(**TINY)
    config.kv_lora_rank = 8  # an attention the q/k/v/o formula does not describe
    with pytest.raises(ValueError, match="kv_lora_rank"):
        from_config(config)
    flops = model_flops(config, model=tiny_model(Qwen2Config(**TINY)))
    assert flops.source == "model modules" and flops.matmul_params == TINY_N


def test_lora_and_freeze_count_only_the_backward_they_need():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(Qwen2Config(**TINY)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    flops = model_flops(model=model)
    adapters = 2 * ((64 * 4 + 4 * 64) + (64 * 4 + 4 * 32))  # 2 layers x (q: 64->4->64, v: 64->4->32)
    assert flops.adapter_params == adapters == 1792
    assert flops.trainable_layer_params == adapters and not flops.head_trainable
    assert flops.backprop_from_layer == 0
    layers = 2 * TINY_LAYER + adapters
    # forward 2(L + A); input gradients 2(L + A); weight gradients 2A only; lm_head forward + input gradient.
    assert flops.per_token(10) == 4 * layers + 2 * adapters + 4 * TINY_HEAD + 12 * 2 * 64 * 10

    frozen = tiny_model(Qwen2Config(**TINY))
    for name, param in frozen.named_parameters():
        param.requires_grad = name.startswith("model.layers.1.")
    flops = model_flops(model=frozen)
    assert (flops.backprop_from_layer, flops.trainable_layer_params, flops.head_trainable) == (1, TINY_LAYER, False)
    assert flops.per_token(10) == (
        2 * 2 * TINY_LAYER + 2 * TINY_LAYER + 2 * TINY_LAYER  # forward both, backward layer 1 only
        + 4 * TINY_HEAD
        + (4 + 12) * 64 * 10  # attention: forward in both layers, backward in layer 1
    )
    # Full training of the same model is PaLM's formula.
    assert model_flops(model=tiny_model(Qwen2Config(**TINY))).per_token(10) == 6 * TINY_N + 12 * 2 * 64 * 10


# -- peak FLOP/s ----------------------------------------------------------------------------------------


def test_peak_table_lookup():
    assert lookup_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == (989.5e12, "H100")
    assert lookup_peak_flops("NVIDIA H100 PCIe", "bf16") == (756.5e12, "H100 PCIe")
    assert lookup_peak_flops("NVIDIA A100-SXM4-80GB", "fp32")[0] == 19.5e12
    assert lookup_peak_flops("NVIDIA GH200 480GB", "bf16")[1] == "GH200"
    assert lookup_peak_flops("NVIDIA A10G", "bf16") is None  # not "A10"
    assert lookup_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 units
    assert peak_flops(torch.device("cpu"), torch.float32, peak_tflops=2.5) == (2.5e12, "peak_tflops")
    assert peak_flops(torch.device("cpu"), torch.float32, calibrate=False)[0] is None


def test_calibration_is_fast_positive_and_finite():
    start = time.perf_counter()
    flops = calibrate_peak_flops("cpu", torch.float32, size=256, seconds=0.2)
    assert 0.2 <= time.perf_counter() - start < 1.5
    assert math.isfinite(flops) and flops > 1e8  # any CPU does 0.1 GFLOP/s


# -- effective lengths and token counts -------------------------------------------------------------------


def test_packed_position_ids_give_per_sample_lengths():
    packed = {"input_ids": torch.ones(1, 9, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])}
    # Samples of 3, 2 and 4 tokens: Σlen² = 29 over Σlen = 9, an effective length of 29/9 = 3.22.
    assert attention_length_sums(packed).tolist() == [29]
    assert attention_length_sums(packed, windows=(2, 3)).tolist() == [29, 3 * 2 + 2 * 2 + 4 * 2, 9 + 4 + 4 * 3]
    # A trailing padding segment (its own restart at 0) has no real tokens: length 0.
    padded = {
        "input_ids": torch.ones(1, 9, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0, 1]]),
        "_token_mask": torch.tensor([[True] * 7 + [False] * 2]),
    }
    assert attention_length_sums(padded).tolist() == [9 + 16]


def test_masked_batches_give_per_row_and_per_sample_lengths():
    padded = {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": torch.tensor([[1] * 6 + [0] * 2, [0] * 4 + [1] * 4])}
    assert attention_length_sums(padded).tolist() == [36 + 16]
    neat = {"input_ids": torch.ones(1, 8, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0]])}
    assert attention_length_sums(neat).tolist() == [9 + 4 + 1]


def test_token_mask_counts_real_tokens():
    batch = {
        "input_ids": torch.ones(2, 5, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]),
        "_token_mask": torch.tensor([[True] * 5, [True] * 4 + [False]]),
        "labels": torch.tensor([[-100, 1, 1, -100, 1], [-100, 1, 1, 1, -100]]),
    }
    assert count_batch_tokens(batch).tolist() == [9, 6, 10]
    assert attention_length_sums(batch).tolist() == [9 + 4 + 16]


# -- MFU in the callback -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_mfu_equals_model_flops_rate_over_peak(tmp_path):
    flops = from_config(Qwen2Config(**TINY))
    clock = FakeClock()
    cb = ThroughputCallback(warmup_steps=0, clock=clock, peak_tflops=1e-6, flops=flops)  # peak 1 MFLOP/s
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(args, state, control)
    labels = torch.full((2, 8), IGNORE_INDEX)
    labels[0, 3:6] = 5
    labels[1, 2:4] = 5
    batch = {
        "input_ids": torch.ones(2, 8, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 6 + [0] * 2, [1] * 4 + [0] * 4]),
        "labels": labels,
    }
    cb.observe_batch(batch)
    cb.observe_batch(batch)
    clock.t = 4.0
    state.global_step = 1
    cb.on_step_end(args, state, control)
    logs = {"loss": 1.0}
    state.log_history.append({**logs, "step": 1})
    cb.on_log(args, state, control, logs=logs)

    # 20 tokens, 10 supervised, Σlen² = 2 x (36 + 16) over 4 s on one device.
    tokens_per_s, supervised_per_s = 20 / 4, 10 / 4
    by_hand = tokens_per_s * 6 * 2 * TINY_LAYER + supervised_per_s * 6 * TINY_HEAD + 12 * 2 * 64 * 104 / 4
    assert by_hand == pytest.approx(flops.training_flops(20, 10, {None: 104}) / 4)
    assert logs["throughput/tokens_per_s"] == tokens_per_s
    assert logs["throughput/tflops_per_device"] == pytest.approx(by_hand / 1e12, rel=1e-3)
    assert logs["throughput/mfu"] == pytest.approx(by_hand / 1e6, rel=1e-3)
    # Every token supervised and one length: the rate is exactly tokens/s x flops_per_token / peak.
    assert flops.training_flops(5, 5, {None: 25}) / 5 == flops_per_token(Qwen2Config(**TINY), 5)


def test_peak_must_be_positive():
    with pytest.raises(ConfigError, match="peak_tflops"):
        ThroughputCallback(peak_tflops=0)


def test_no_peak_no_mfu_key(tmp_path):
    clock = FakeClock()
    flops = ModelFlops(layer_params=(10,), head_params=0, attn_dims=(0,), windows=(None,))
    cb = ThroughputCallback(warmup_steps=0, clock=clock, calibrate_peak=False, flops=flops)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state = TrainerState()
    cb.on_train_begin(args, state, TrainerControl())
    cb.observe_batch({"input_ids": torch.ones(1, 4, dtype=torch.long)})
    clock.t = 2.0
    state.global_step = 1
    cb.on_step_end(args, state, TrainerControl())
    logs = {"loss": 1.0}
    cb.on_log(args, state, TrainerControl(), logs=logs)
    assert logs["throughput/tflops_per_device"] == pytest.approx(4 * 6 * 10 / 2 / 1e12)
    assert "throughput/mfu" not in logs


def test_a_process_calibrates_each_device_and_dtype_once(monkeypatch):
    import lmforge.train.peak_flops as module

    calls = []
    monkeypatch.setattr(module, "_CALIBRATED", {})
    monkeypatch.setattr(module, "calibrate_peak_flops", lambda device, dtype, seconds: calls.append(dtype) or 1e9)
    for _ in range(3):
        assert peak_flops(torch.device("cpu"), torch.float32)[0] == 1e9
    peak_flops(torch.device("cpu"), torch.bfloat16)
    assert calls == [torch.float32, torch.bfloat16]
