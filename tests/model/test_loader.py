"""load_model / load_tokenizer on a real tiny Qwen2 directory: paths, safety, dtypes, checkpointing, counts."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.model_args import ModelArguments
from lmforge.errors import ConfigError, ModelError
from lmforge.model.loader import count_parameters, load_model, resolve_dtype
from lmforge.model.tokenizer import load_tokenizer


def model_args(path, **kwargs) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(path), **kwargs)


def full_param_count(c: dict) -> int:
    """Qwen2 by hand: q/k/v have biases, o and the MLP do not, two RMSNorms per layer, tied head."""
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h
    per_layer = attention + 3 * h * inter + 2 * h
    return layers * per_layer + vocab * h + h  # + embeddings (shared with lm_head) + final norm


# --- paths and safety -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Qwen/Qwen2-0.5B", "/nonexistent/model/dir"])
def test_missing_directory_names_key_and_create_model(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: a hub id is not found there
    loaders = (
        lambda: load_tokenizer(model_args(name)),
        lambda: load_model(model_args(name), AdapterArguments.from_keys(), is_trainable=True),
    )
    for load in loaders:
        with pytest.raises(ModelError, match="model_name_or_path") as info:
            load()
        if name.startswith("Qwen"):  # a hub id: where it was looked for, and how to fetch it
            assert "not in the Hugging Face cache" in str(info.value) and "huggingface-cli download" in str(info.value)
        else:
            assert "lmforge create-model" in str(info.value)


def test_pickle_only_directory_is_refused(tiny_qwen2_dir, tmp_path):
    bin_dir = tmp_path / "bin-only"
    bin_dir.mkdir()
    shutil.copy(tiny_qwen2_dir / "config.json", bin_dir / "config.json")
    torch.save(load_file(tiny_qwen2_dir / "model.safetensors"), bin_dir / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors"):
        load_model(model_args(bin_dir), AdapterArguments.from_keys(finetuning_type="full"), is_trainable=True)


# --- tokenizer ---------------------------------------------------------------------------------------


def test_tokenizer_gets_eos_as_pad_and_right_padding(model_with_tokenizer_dir):
    tokenizer = load_tokenizer(model_args(model_with_tokenizer_dir))
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    batch = tokenizer(["hello world", "hello"], padding=True)
    assert batch["input_ids"][1][-1] == tokenizer.pad_token_id


def test_tokenizer_keeps_its_own_pad_token(tiny_qwen2_dir):
    tokenizer = load_tokenizer(model_args(tiny_qwen2_dir))
    assert tokenizer.pad_token == "<|endoftext|>" != tokenizer.eos_token
    assert tokenizer.padding_side == "right"


def test_directory_without_tokenizer_is_a_model_error(tiny_bf16_dir):
    with pytest.raises(ModelError, match="no tokenizer"):
        load_tokenizer(model_args(tiny_bf16_dir))


# --- dtype policy ------------------------------------------------------------------------------------

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@pytest.mark.parametrize(
    ("requested", "saved", "device", "trainable", "expected"),
    [
        ("auto", BF16, "cpu", False, BF16),  # CPU runs bf16: keep the checkpoint's precision
        ("auto", BF16, "cpu", True, FP32),  # but trains in fp32 (bf16 comes from autocast)
        ("auto", BF16, "cuda", True, BF16),  # GPU: bf16 base, trainable params upcast later
        ("auto", FP16, "cuda", False, FP16),
        ("auto", FP16, "cpu", False, FP32),  # no fp16 on CPU, no fp16 -> bf16 conversion
        ("auto", FP32, "cuda", False, FP32),
        ("auto", None, "cuda", False, FP32),
        ("bf16", FP32, "cpu", False, BF16),
        ("fp16", FP32, "cpu", True, FP32),
        ("float32", BF16, "cuda", True, FP32),
    ],
)
def test_resolve_dtype(monkeypatch, requested, saved, device, trainable, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype(requested, saved, device=device, is_trainable=trainable) == expected


def test_resolve_dtype_on_gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", BF16, device="cuda", is_trainable=False) == FP32


def test_resolve_dtype_rejects_unknown_name():
    with pytest.raises(ConfigError, match="torch_dtype: 'half'"):
        resolve_dtype("half", None, device="cpu", is_trainable=False)


def test_bf16_checkpoint_loads_bf16_for_inference_and_fp32_for_cpu_training(tiny_bf16_dir):
    if torch.cuda.is_available():
        pytest.skip("CPU policy")
    ft = AdapterArguments.from_keys(finetuning_type="full")
    inference = load_model(model_args(tiny_bf16_dir), ft, is_trainable=False)
    assert {p.dtype for p in inference.parameters()} == {BF16}
    training = load_model(model_args(tiny_bf16_dir), ft, is_trainable=True)
    assert {p.dtype for p in training.parameters()} == {FP32}


# --- training / inference preparation ----------------------------------------------------------------


def test_inference_model_is_frozen_and_in_eval_mode(tiny_qwen2_dir):
    model = load_model(model_args(tiny_qwen2_dir), AdapterArguments.from_keys(finetuning_type="lora"), is_trainable=False)
    assert type(model).__name__ == "Qwen2ForCausalLM"  # no adapter is created for inference
    assert count_parameters(model)[0] == 0
    assert not model.training


def test_gradient_checkpointing_trains_lora_through_frozen_layers(tiny_qwen2_dir):
    lora = AdapterArguments.from_keys(finetuning_type="lora")
    model = load_model(model_args(tiny_qwen2_dir), lora, is_trainable=True, gradient_checkpointing=True)
    base = model.get_base_model()
    checkpointing = getattr(base, "is_activation_checkpointing", None)
    assert (base.is_gradient_checkpointing if checkpointing is None else checkpointing) and not base.config.use_cache
    model.train()
    ids = torch.arange(12).reshape(2, 6)
    model(input_ids=ids, labels=ids).loss.backward()
    # B starts at zero (so A gets no gradient yet); B of the first layer must get one through both layers.
    first_layer_b = base.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert first_layer_b.grad is not None and first_layer_b.grad.abs().sum() > 0


def test_counts_are_logged_and_exposed(tiny_qwen2_dir, tiny_config, caplog):
    logger = logging.getLogger("lmforge")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="lmforge"):
            full = AdapterArguments.from_keys(finetuning_type="full")
            model = load_model(model_args(tiny_qwen2_dir), full, is_trainable=True)
    finally:
        logger.removeHandler(caplog.handler)
    total = full_param_count(tiny_config)
    assert count_parameters(model) == (total, total)
    assert f"trainable params: {total:,} || all params: {total:,} || trainable%: 100.0000" in caplog.text


def test_unknown_finetuning_type_suggests_a_name(tiny_qwen2_dir):
    with pytest.raises(ConfigError, match="unknown finetuning_type 'lroa' \\(did you mean 'lora'\\?\\)"):
        load_model(model_args(tiny_qwen2_dir), AdapterArguments.from_keys(finetuning_type="lroa"), is_trainable=True)


def test_checkpointing_every_second_layer_keeps_the_gradients(tiny_qwen2_dir):
    full = AdapterArguments.from_keys(finetuning_type="full")
    plain = load_model(model_args(tiny_qwen2_dir), full, is_trainable=True)
    partial = load_model(
        model_args(tiny_qwen2_dir), full, is_trainable=True, gradient_checkpointing=True, checkpoint_every_n_layers=2
    )
    assert [layer.gradient_checkpointing for layer in partial.model.layers] == [True, False]
    ids = torch.arange(24).reshape(2, 12) % plain.config.vocab_size
    grads = []
    for model in (plain, partial):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_selective_checkpointing_keeps_the_gradients(tiny_qwen2_dir):
    full = AdapterArguments.from_keys(finetuning_type="full")
    plain = load_model(model_args(tiny_qwen2_dir), full, is_trainable=True)
    selective = load_model(
        model_args(tiny_qwen2_dir), full, is_trainable=True, gradient_checkpointing=True, selective_checkpointing=True
    )
    ids = torch.arange(24).reshape(2, 12) % plain.config.vocab_size
    grads = []
    for model in (plain, selective):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)  # recomputation repeats the same ops


def test_zero3_partitioned_parameters_count_at_their_full_size():
    """Under DeepSpeed ZeRO-3 a loaded weight is an empty shard that carries its size in `ds_numel`; counting
    numel() found 'no parameter trainable' on an H200 (benchmarks/RESULTS.md), so the count reads ds_numel."""
    model = torch.nn.Linear(4, 3)
    for param in model.parameters():
        param.ds_numel = param.numel()
        param.data = torch.empty(0)
    assert count_parameters(model) == (15, 15)
