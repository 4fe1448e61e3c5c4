"""full / freeze / lora on a real tiny Qwen2: exact trainable counts by hand, name errors, adapter reuse.

Shapes (from the config): hidden h, kv width = h / heads * kv_heads, MLP width i. Per layer the linear
layers are q (h->h), k and v (h->kv), o (h->h), gate and up (h->i), down (i->h).
"""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.model_args import ModelArguments
from lmforge.errors import ConfigError, ModelError
from lmforge.model import loader
from lmforge.model.adapters import ADAPTERS, find_linear_module_names
from lmforge.model.loader import count_parameters, load_model

LINEAR_KINDS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def shapes(c: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear kind in one decoder layer."""
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    return {
        "q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
    }  # fmt: skip


def lora_count(c: dict, r: int, kinds=LINEAR_KINDS) -> int:
    return c["num_hidden_layers"] * sum(r * (shapes(c)[k][0] + shapes(c)[k][1]) for k in kinds)


def layer_count(c: dict) -> int:
    """One decoder layer: q/k/v biases, no o/MLP bias, two RMSNorm weights."""
    s = shapes(c)
    return sum(i * o for i, o in s.values()) + s["q_proj"][1] + 2 * s["k_proj"][1] + 2 * c["hidden_size"]


def load(path, is_trainable=True, adapter=None, **finetuning) -> torch.nn.Module:
    model_args = ModelArguments(model_name_or_path=str(path), adapter_name_or_path=adapter)
    return load_model(model_args, AdapterArguments.from_keys(**finetuning), is_trainable=is_trainable)


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


INPUT_IDS = torch.tensor([[3, 17, 42, 8, 99, 5, 61, 7]])


def logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


# --- full ---------------------------------------------------------------------------------------------


def test_full_trains_everything(tiny_qwen2_dir, tiny_config):
    c = tiny_config
    expected = c["num_hidden_layers"] * layer_count(c) + c["vocab_size"] * c["hidden_size"] + c["hidden_size"]
    assert count_parameters(load(tiny_qwen2_dir, finetuning_type="full")) == (expected, expected)


# --- freeze -------------------------------------------------------------------------------------------


def test_freeze_last_layer_mlp_only(tiny_qwen2_dir, tiny_config):
    model = load(tiny_qwen2_dir, finetuning_type="freeze", freeze_trainable_layers=1, freeze_trainable_modules="mlp")
    last = tiny_config["num_hidden_layers"] - 1
    mlp = {f"model.layers.{last}.mlp.{k}.weight" for k in ("gate_proj", "up_proj", "down_proj")}
    assert trainable_names(model) == mlp
    h, i = tiny_config["hidden_size"], tiny_config["intermediate_size"]
    assert count_parameters(model)[0] == 3 * h * i


def test_freeze_first_layer_all_plus_embeddings(tiny_qwen2_dir, tiny_config):
    model = load(
        tiny_qwen2_dir, finetuning_type="freeze", freeze_trainable_layers=-1, freeze_extra_modules="embed_tokens"
    )
    names = trainable_names(model)
    embed = "model.embed_tokens.weight"
    assert embed in names and all(n.startswith("model.layers.0.") for n in names - {embed})
    c = tiny_config
    assert count_parameters(model)[0] == layer_count(c) + c["vocab_size"] * c["hidden_size"]


def test_freeze_dotted_module_and_final_norm(tiny_qwen2_dir, tiny_config):
    model = load(
        tiny_qwen2_dir,
        finetuning_type="freeze",
        freeze_trainable_layers=2,
        freeze_trainable_modules="self_attn.q_proj",
        freeze_extra_modules="norm",
    )
    h = tiny_config["hidden_size"]
    # `norm` is the final norm only, not every *_layernorm inside the layers
    assert count_parameters(model)[0] == 2 * (h * h + h) + h


MODULE_TYPO = (
    "freeze_trainable_modules 'mpl' is not a module of the decoder layers (did you mean 'mlp'?); "
    "available: all, input_layernorm, mlp, post_attention_layernorm, self_attn"
)
EXTRA_TYPO = (
    "freeze_extra_modules 'embed_token' is not a module outside the decoder layers "
    "(did you mean 'embed_tokens'?); available: embed_tokens, lm_head, norm"
)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"freeze_trainable_modules": "mpl"}, MODULE_TYPO),
        ({"freeze_extra_modules": "embed_token"}, EXTRA_TYPO),
        ({"freeze_trainable_layers": 3}, "freeze_trainable_layers: 3 asks for 3 layers but the model has 2"),
        ({"freeze_trainable_layers": -3}, "freeze_trainable_layers: -3 asks for 3 layers but the model has 2"),
        ({"freeze_trainable_layers": 0}, "freeze_trainable_layers: 0 and no freeze_extra_modules leaves nothing"),
    ],
)  # fmt: skip
def test_freeze_errors_name_the_key(tiny_qwen2_dir, keys, message):
    with pytest.raises(ConfigError) as info:
        load(tiny_qwen2_dir, finetuning_type="freeze", **keys)
    assert str(info.value).startswith(message)


# --- lora ---------------------------------------------------------------------------------------------


def test_all_linear_names_leave_out_the_head(tiny_qwen2_dir):
    model = load(tiny_qwen2_dir, is_trainable=False, finetuning_type="full")
    assert find_linear_module_names(model) == LINEAR_KINDS


def test_lora_all_targets(tiny_qwen2_dir, tiny_config):
    model = load(tiny_qwen2_dir, finetuning_type="lora", lora_rank=8)
    assert isinstance(model, PeftModel)
    assert count_parameters(model)[0] == lora_count(tiny_config, 8)
    assert set(model.peft_config["default"].target_modules) == set(LINEAR_KINDS)
    assert model.peft_config["default"].lora_alpha == 16  # default 2 * rank
    assert all("lora_" in name for name in trainable_names(model))


def test_lora_explicit_targets(tiny_qwen2_dir, tiny_config):
    model = load(tiny_qwen2_dir, finetuning_type="lora", lora_rank=4, lora_alpha=8, lora_target="q_proj, v_proj")
    assert count_parameters(model)[0] == lora_count(tiny_config, 4, ["q_proj", "v_proj"])


def test_lora_additional_target_trains_the_module_in_full(tiny_qwen2_dir, tiny_config):
    model = load(tiny_qwen2_dir, finetuning_type="lora", additional_target="embed_tokens")
    c = tiny_config
    assert count_parameters(model)[0] == lora_count(c, 8) + c["vocab_size"] * c["hidden_size"]
    base = model.get_base_model()  # the tied head reads the embedding copy that trains
    assert base.lm_head.modules_to_save["default"].weight is base.model.embed_tokens.modules_to_save["default"].weight


def test_dora_adds_one_magnitude_per_output_feature(tiny_qwen2_dir, tiny_config):
    model = load(tiny_qwen2_dir, finetuning_type="lora", use_dora=True)
    magnitudes = tiny_config["num_hidden_layers"] * sum(out for _, out in shapes(tiny_config).values())
    assert count_parameters(model)[0] == lora_count(tiny_config, 8) + magnitudes


def test_lora_target_typo_suggests_the_name(tiny_qwen2_dir):
    with pytest.raises(ConfigError) as info:
        load(tiny_qwen2_dir, finetuning_type="lora", lora_target="q_prj,v_proj")
    assert str(info.value) == (
        "lora_target 'q_prj' matches no module of this model (did you mean 'q_proj'?); "
        "available: " + ", ".join(LINEAR_KINDS)
    )


def test_lora_target_on_a_container_is_refused(tiny_qwen2_dir):
    with pytest.raises(ConfigError, match="lora_target 'mlp' names a Qwen2MLP, which LoRA cannot adapt"):
        load(tiny_qwen2_dir, finetuning_type="lora", lora_target="mlp")


def test_additional_target_typo(tiny_qwen2_dir):
    with pytest.raises(ConfigError, match=r"additional_target 'embed' matches no module.*available outside"):
        load(tiny_qwen2_dir, finetuning_type="lora", additional_target="embed")


def test_registry_holds_the_three_types():
    assert ADAPTERS.names() == ["freeze", "full", "lora"]


# --- dtypes: trainable weights in fp32 over a half-precision base -------------------------------------


@pytest.mark.parametrize("finetuning_type", ["lora", "freeze"])
def test_trainable_params_fp32_over_bf16_base(monkeypatch, tiny_bf16_dir, finetuning_type):
    # Pretend to be on a bf16 GPU so the base loads in bf16 for training (the model itself stays on CPU).
    monkeypatch.setattr(loader, "default_device", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    model = load(tiny_bf16_dir, finetuning_type=finetuning_type, freeze_trainable_layers=1)
    params = dict(model.named_parameters())
    assert {p.dtype for p in params.values() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in params.values() if not p.requires_grad} == {torch.bfloat16}


# --- existing adapters --------------------------------------------------------------------------------


def save_adapter(base_dir, out_dir, seed: int, **finetuning) -> torch.Tensor:
    """Train-free adapter with random (non-zero) B; returns the adapted model's logits."""
    model = load(base_dir, finetuning_type="lora", **finetuning)
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model.save_pretrained(out_dir)
    return logits(model)


def test_continue_adapter_reproduces_outputs_and_trains(tiny_qwen2_dir, tiny_config, tmp_path):
    expected = save_adapter(tiny_qwen2_dir, tmp_path / "a", seed=1, lora_rank=4, lora_target="q_proj,v_proj")
    # lora_rank / lora_target here are ignored: the saved adapter's own config applies
    model = load(tiny_qwen2_dir, finetuning_type="lora", adapter=str(tmp_path / "a"), lora_rank=16)
    assert isinstance(model, PeftModel)
    assert count_parameters(model)[0] == lora_count(tiny_config, 4, ["q_proj", "v_proj"])
    assert all(("lora_" in n) for n in trainable_names(model))
    torch.testing.assert_close(logits(model), expected)


def test_several_adapters_merge_all_but_the_last(tiny_qwen2_dir, tiny_config, tmp_path):
    save_adapter(tiny_qwen2_dir, tmp_path / "a", seed=1)
    save_adapter(tiny_qwen2_dir, tmp_path / "b", seed=2, lora_rank=2, lora_target="o_proj")
    base = load(tiny_qwen2_dir, is_trainable=False, finetuning_type="full")
    merged = PeftModel.from_pretrained(base, str(tmp_path / "a")).merge_and_unload()
    expected = logits(PeftModel.from_pretrained(merged, str(tmp_path / "b")))

    model = load(tiny_qwen2_dir, finetuning_type="lora", adapter=f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert count_parameters(model)[0] == lora_count(tiny_config, 2, ["o_proj"])  # only b trains
    torch.testing.assert_close(logits(model), expected)


def test_create_new_adapter_merges_and_starts_fresh(tiny_qwen2_dir, tiny_config, tmp_path):
    expected = save_adapter(tiny_qwen2_dir, tmp_path / "a", seed=1)
    model = load(
        tiny_qwen2_dir,
        finetuning_type="lora",
        adapter=str(tmp_path / "a"),
        create_new_adapter=True,
        lora_rank=2,
        lora_target="q_proj",
    )
    assert count_parameters(model)[0] == lora_count(tiny_config, 2, ["q_proj"])
    torch.testing.assert_close(logits(model), expected)  # a fresh adapter starts as a no-op (B = 0)


def test_inference_merges_adapters(tiny_qwen2_dir, tmp_path):
    expected = save_adapter(tiny_qwen2_dir, tmp_path / "a", seed=1)
    model = load(tiny_qwen2_dir, is_trainable=False, finetuning_type="lora", adapter=str(tmp_path / "a"))
    assert not isinstance(model, PeftModel) and count_parameters(model)[0] == 0
    torch.testing.assert_close(logits(model), expected, rtol=1e-4, atol=1e-5)


def test_adapter_dir_errors(tiny_qwen2_dir, tmp_path):
    with pytest.raises(ModelError, match="adapter_name_or_path: .* is not a LoRA adapter directory"):
        load(tiny_qwen2_dir, finetuning_type="lora", adapter=str(tmp_path))
    save_adapter(tiny_qwen2_dir, tmp_path / "a", seed=1)
    weights = tmp_path / "a" / "adapter_model.safetensors"
    weights.rename(weights.with_name("adapter_model.bin"))
    with pytest.raises(ModelError, match="has no adapter_model.safetensors"):
        load(tiny_qwen2_dir, finetuning_type="lora", adapter=str(tmp_path / "a"))
