"""The presets of `lmforge create-model`: what a new model is made of, as data.

    PRESETS.get("tiny-qwen2").config["hidden_size"]     # 64

Kept apart from `from_config` (which builds the model with torch and transformers) so that
`lmforge create-model --help` and a mistyped preset answer at once (the command is tools/create_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.model.special_tokens import CHATML_TOKENS, ENDOFTEXT, LLAMA3_TOKENS
from lmforge.registry import Registry


@dataclass(frozen=True)
class Preset:
    """What a new model is made of: architecture fields plus its tokenizer's conventions."""

    model_type: str
    """transformers model_type (`qwen2`, `llama`); picks the config and model classes."""
    config: dict[str, Any]
    """Config fields besides the vocabulary and special-token ids, which come from the tokenizer."""
    chat_template: str
    """File name in `assets/` of the Jinja chat template."""
    special_tokens: tuple[str, ...]
    eos_token: str
    stop_tokens: tuple[str, ...]
    """Tokens generation stops on (generation_config.eos_token_id), eos first."""
    bos_token: str | None = None
    add_bos_token: bool = False
    pad_token: str = ENDOFTEXT
    tokenizer_vocab_size: int = 1024
    """Target trained size; the shipped corpus caps what is reachable (about 5,900 ids)."""
    model_vocab_size: int | None = None
    """Rows of the embedding; None means len(tokenizer) rounded up to `pad_vocab_to_multiple_of`."""
    pad_vocab_to_multiple_of: int = 64
    dtype: str = "float32"
    """dtype of the saved weights (config.json `dtype`)."""
    description: str = ""


PRESETS: Registry[Preset] = Registry("preset")

_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 176,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}

PRESETS.add(
    "tiny-qwen2",
    Preset(
        model_type="qwen2",
        config=_TINY,
        chat_template="chatml.jinja",
        special_tokens=tuple(CHATML_TOKENS),
        eos_token="<|im_end|>",
        stop_tokens=("<|im_end|>", ENDOFTEXT),
        description="Qwen2, 2 layers x 64 wide, 1024-token ChatML tokenizer (tests, demo)",
    ),
)
PRESETS.add(
    "tiny-llama",
    Preset(
        model_type="llama",
        config=_TINY,
        chat_template="llama3.jinja",
        special_tokens=tuple(LLAMA3_TOKENS),
        eos_token="<|eot_id|>",
        stop_tokens=("<|eot_id|>", ENDOFTEXT),
        bos_token="<|begin_of_text|>",
        add_bos_token=True,
        description="Llama, 2 layers x 64 wide, 1024-token Llama 3 style tokenizer (tests, demo)",
    ),
)
PRESETS.add(
    "small-qwen2",
    Preset(
        model_type="qwen2",
        config={
            "hidden_size": 512,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "intermediate_size": 1408,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
        },
        chat_template="chatml.jinja",
        special_tokens=tuple(CHATML_TOKENS),
        eos_token="<|im_end|>",
        stop_tokens=("<|im_end|>", ENDOFTEXT),
        # The corpus yields ~5,900 ids; the embedding is padded to 32,000 rows so that the embedding and
        # lm_head cost what they would with a real 32k vocabulary.
        tokenizer_vocab_size=32000,
        model_vocab_size=32000,
        dtype="bfloat16",
        description="Qwen2, 8 layers x 512 wide, 32k vocab, bf16 (speed benchmarks)",
    ),
)

# One tiny random instance of every decoder family people fine-tune, for the architecture matrix
# (tests/model/test_architectures.py) and for trying a family locally. All share the ChatML tokenizer of
# tiny-qwen2 (tokenizer conventions are not what differs between these architectures); the config fields
# are each family's own, chosen small but so that its distinctive parts are active: MoE routing with more
# experts than are picked, sliding windows shorter than the test sequences, softcapping, partial / no RoPE,
# Granite's multipliers, DeepSeek-V3's latent attention with a dense first layer and a shared expert.
_MOE = {"num_experts_per_tok": 2, "moe_intermediate_size": 32}
_SHORT_WINDOW = 8
"""Sliding window of the tiny Gemma / Mistral presets: shorter than the test samples, so it changes logits."""
FAMILY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen3": ("qwen3", {**_TINY, "head_dim": 16}),
    "qwen3-moe": ("qwen3_moe", {**_TINY, **_MOE, "head_dim": 16, "num_experts": 4, "decoder_sparse_step": 1}),
    "mistral": ("mistral", {**_TINY, "head_dim": 16, "sliding_window": _SHORT_WINDOW}),
    "mixtral": ("mixtral", {**_TINY, "num_local_experts": 4, "num_experts_per_tok": 2,
                            "intermediate_size": 64}),
    "gemma2": ("gemma2", {**_TINY, "head_dim": 16, "query_pre_attn_scalar": 16,
                          "sliding_window": _SHORT_WINDOW, "attn_logit_softcapping": 50.0,
                          "final_logit_softcapping": 30.0}),
    "gemma3": ("gemma3_text", {**_TINY, "head_dim": 16, "query_pre_attn_scalar": 16,
                               "sliding_window": _SHORT_WINDOW,
                               "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": ("phi3", {**_TINY, "tie_word_embeddings": False}),
    "olmo2": ("olmo2", dict(_TINY)),
    "granite": ("granite", {**_TINY, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                            "attention_multiplier": 0.25, "logits_scaling": 2.0}),
    "gpt-neox": ("gpt_neox", {k: v for k, v in _TINY.items() if k != "num_key_value_heads"}),
    "smollm3": ("smollm3", {**_TINY, "no_rope_layer_interval": 2}),
    "deepseek-v3": ("deepseek_v3", {**_TINY, **_MOE, "intermediate_size": 128, "num_key_value_heads": 4,
                                    "n_routed_experts": 4, "n_shared_experts": 1, "first_k_dense_replace": 1,
                                    "n_group": 1, "topk_group": 1, "q_lora_rank": 32, "kv_lora_rank": 16,
                                    "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16}),
}
"""Preset suffix -> (model_type, config fields); `tiny-llama` and `tiny-qwen2` above complete the matrix."""

for _family, (_model_type, _config) in FAMILY_CONFIGS.items():
    PRESETS.add(
        f"tiny-{_family}",
        Preset(
            model_type=_model_type,
            config=_config,
            chat_template="chatml.jinja",
            special_tokens=tuple(CHATML_TOKENS),
            eos_token="<|im_end|>",
            stop_tokens=("<|im_end|>", ENDOFTEXT),
            description=f"{_model_type}, 2 layers x 64 wide, ChatML tokenizer (architecture tests)",
        ),
    )
