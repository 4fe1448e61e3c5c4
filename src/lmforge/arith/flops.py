"""Model FLOPs per token from a model config: the numerator of MFU (the denominator is arith/peak_tflops.py).

Usage::

    from lmforge.arith.flops import from_config
    mf = from_config(hf_config)                         # shapes only: every weight taken to train
    mf.per_token(2048)                                  # 6N + 12·L·d_q·T: PaLM's training FLOPs per token
    mf.training_flops(tokens=t, supervised=s, length_sums={None: sum_len_sq})

Pure arithmetic on a config's numbers (no torch): what trains in a real model is read by
`lmforge.model.flops.model_flops`, which fills in the adapter and backprop fields.

Counting convention (model FLOPs: the work the maths needs, not what a given kernel happens to do):

* A (m x k) @ (k x n) matmul costs 2mkn FLOPs. Per token, a weight matrix of P entries costs 2P forward,
  2P for the gradient of its input and 2P for its own gradient: the "6N" of Kaplan et al. (2020) and
  PaLM (Chowdhery et al. 2022, appendix B).
* N counts matmul weights only: attention q/k/v/o, the MLP (gate/up/down; for mixture-of-experts the
  experts a token is routed to, shared experts and the router) and the lm_head. Embedding lookups,
  norms, biases, activations, softmax and rotary embeddings are not matmuls and are left out (< 1% each).
  The lm_head counts whether or not it is tied to the input embedding: tying shares weights, not work.
* Attention scores (QK^T) and the weighted sum (AV) cost 2·T·d_q FLOPs each per token and layer forward,
  d_q = query heads x head_dim and T the length of the sample the token belongs to; x3 for training gives
  PaLM's 12·L·d_q·T. Convention: PaLM's, *without* halving for the causal mask, so a causal kernel does
  about half of this term (it stays small at fine-tuning lengths: ~4% of a 7B model's FLOPs at T = 1k).
  Sliding-window layers use min(T, window).
* Padded and packed batches: T is each sample's real length, so a batch's attention FLOPs are
  12·Σ_layers d_q·Σ_samples len·min(len, W_layer), i.e. per token an effective length Σlen²/Σlen.
  Padding is never counted: it is waste, not model work.

Two departures from PaLM's definition, both so that MFU cannot exceed 1 on work a run does not need
(for full-parameter pretraining they change nothing):

* Only the backward the run needs. Weight gradients (the third 2N) are counted only for trainable matmul
  weights (LoRA: the adapters, whose own matmuls are added to N; freeze: the trainable layers), and input
  gradients only for the layers at or above the lowest layer with a trainable parameter. With LoRA this
  gives about 4N per token where PaLM's formula says 6N: a LoRA run reported against 6N would claim 1.5x
  the work it does.
* The lm_head (6·vocab·hidden per token) counts only for supervised tokens: positions whose logits the
  loss reads. Prompt positions need no logits.

Not counted: gradient-checkpointing recompute (that is hardware FLOPs, not model FLOPs: turning it on
lowers MFU, honestly), the optimizer step, and forwards of frozen reference models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# -- model FLOPs ----------------------------------------------------------------------------------------

# Model types whose MLP is up -> activation -> down (2 matrices); everything else is taken as gated
# (SwiGLU / GeGLU: gate, up, down = 3 matrices), which Llama, Qwen, Mistral, Gemma, Phi-3, OLMo use.
NON_GATED_MLP_MODEL_TYPES = frozenset(
    {"gpt2", "gpt_bigcode", "gpt_neox", "gptj", "gpt_neo", "opt", "bloom", "falcon", "phi", "starcoder2", "codegen"}
)

# Config attribute aliases, first present wins (most configs also map these via attribute_map).
_HIDDEN = ("hidden_size", "n_embd", "d_model")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_HEADS = ("num_attention_heads", "n_head", "num_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_head_kv")
_INTERMEDIATE = ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
# Architectures whose attention the q/k/v/o formula does not describe: counted from the model's Linears.
_UNSUPPORTED_ATTRIBUTES = ("kv_lora_rank", "q_lora_rank")  # multi-head latent attention (DeepSeek)

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


@dataclass(frozen=True)
class ModelFlops:
    """The shapes that decide a causal LM's training FLOPs, and which of them train.

    `training_flops` is the one formula (see the module docstring); everything else feeds it.
    """

    layer_params: tuple[int, ...]
    """Matmul weights a token runs through in each decoder layer (MoE: routed experts + shared + router)."""
    head_params: int
    """lm_head weights: vocab x hidden."""
    attn_dims: tuple[int, ...]
    """Query heads x head_dim per layer (the width of QK^T and AV)."""
    windows: tuple[int | None, ...]
    """Sliding-attention window per layer; None for full attention."""
    adapter_params: int = 0
    """LoRA matrices (lora_A, lora_B) in the layers; trainable, counted like layer weights."""
    trainable_layer_params: int | None = None
    """Matmul weights in the layers that get a gradient (adapters included); None: all of them."""
    head_trainable: bool = True
    backprop_from_layer: int = 0
    """Lowest layer the backward pass runs through; n_layers when only the head (or nothing) trains."""
    source: str = "config"

    @property
    def n_layers(self) -> int:
        return len(self.layer_params)

    @property
    def matmul_params(self) -> int:
        """N: every matmul weight a token touches, adapters and lm_head included."""
        return sum(self.layer_params) + self.adapter_params + self.head_params

    @property
    def distinct_windows(self) -> tuple[int, ...]:
        return tuple(sorted({w for w in self.windows if w}))

    def training_flops(self, tokens: float, supervised: float, length_sums: Mapping[int | None, float]) -> float:
        """Training FLOPs for `tokens` real tokens of which `supervised` have a loss.

        Args:
            tokens: Real (non-padding) tokens.
            supervised: Tokens whose logits the loss reads (the lm_head runs for these).
            length_sums: Σ over samples of len·min(len, w) for every window w in `distinct_windows`, and
                Σ len² under the key None (the samples' real lengths).
        """
        layers = sum(self.layer_params) + self.adapter_params
        trainable = layers if self.trainable_layer_params is None else self.trainable_layer_params
        backward = self.backprop_from_layer < self.n_layers  # some layer or the embedding trains
        backprop_layers = sum(self.layer_params[self.backprop_from_layer :]) + self.adapter_params * backward
        per_token = 2 * layers + 2 * backprop_layers + 2 * trainable
        per_supervised = self.head_params * (2 + 2 * backward + 2 * self.head_trainable)
        attention = 0.0
        for index, (dim, window) in enumerate(zip(self.attn_dims, self.windows, strict=True)):
            passes = 4 + (8 if backward and index >= self.backprop_from_layer else 0)  # fwd 2+2, bwd 2x
            attention += passes * dim * length_sums[window or None]
        return per_token * tokens + per_supervised * supervised + attention

    def per_token(self, seq_len: float) -> float:
        """Training FLOPs per token for samples of `seq_len` tokens, every token supervised."""
        sums: dict[int | None, float] = {None: seq_len * seq_len}
        sums.update({w: seq_len * min(seq_len, w) for w in self.distinct_windows})
        return self.training_flops(seq_len, seq_len, sums) / seq_len

    def describe(self) -> str:
        """One line for the log: N, what trains, the formula's constants."""
        attn = 12 * sum(self.attn_dims)
        text = (
            f"{self.matmul_params / 1e6:.4g}M matmul params (layers {sum(self.layer_params) / 1e6:.4g}M"
            + (f" + adapters {self.adapter_params / 1e6:.4g}M" if self.adapter_params else "")
            + f", lm_head {self.head_params / 1e6:.4g}M; from {self.source}); attention 12·Σd_q = {attn:,}·T"
        )
        if self.trainable_layer_params is not None:
            text += (
                f"; trainable matmul {self.trainable_layer_params / 1e6:.4g}M"
                f"{' + lm_head' if self.head_trainable else ''}, backward from layer {self.backprop_from_layer}"
            )
        return text


def _first(config, names: tuple[str, ...], default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _per_layer(value, n_layers: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n_layers


def _layer_windows(config, n_layers: int) -> tuple[int | None, ...]:
    window = getattr(config, "sliding_window", None) or None
    layer_types = getattr(config, "layer_types", None)
    if window and layer_types:
        return tuple(window if "sliding" in str(kind) else None for kind in layer_types)
    if window and getattr(config, "use_sliding_window", True):
        return (window,) * n_layers  # Mistral v0.1 style: every layer windowed
    return (None,) * n_layers


def _is_sparse_layer(config, index: int) -> bool:
    """Whether layer `index` of an MoE config routes tokens to experts (some keep a dense MLP)."""
    if index in (getattr(config, "mlp_only_layers", None) or ()):
        return False
    if index < (getattr(config, "first_k_dense_replace", None) or 0):
        return False
    step = getattr(config, "decoder_sparse_step", None) or 1
    return (index + 1) % step == 0


def from_config(config) -> ModelFlops:
    """Shapes of a decoder-only LM from its HF config (Llama, Qwen2/3, Mistral, Mixtral, Gemma, GPT-2, Phi).

    Raises:
        ValueError: The config lacks a shape this formula needs, or has an attention it does not model.
    """
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    missing = [names[0] for names in (_HIDDEN, _LAYERS, _HEADS) if _first(config, names) is None]
    if getattr(config, "vocab_size", None) is None:
        missing.append("vocab_size")
    if missing:
        raise ValueError(f"config {type(config).__name__} has no {', '.join(missing)}")
    unsupported = [name for name in _UNSUPPORTED_ATTRIBUTES if getattr(config, name, None)]
    if unsupported:
        raise ValueError(f"config {type(config).__name__} has {unsupported[0]}: attention shapes not modelled")
    hidden, n_layers, heads = _first(config, _HIDDEN), _first(config, _LAYERS), _first(config, _HEADS)
    kv_heads = _first(config, _KV_HEADS, 1 if getattr(config, "multi_query", False) else heads)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden  # q, k, v, o
    mlp_matrices = 2 if getattr(config, "model_type", "") in NON_GATED_MLP_MODEL_TYPES else 3
    intermediate = _per_layer(_first(config, _INTERMEDIATE, 4 * hidden), n_layers)
    experts = _first(config, _EXPERTS, 0)
    routed = getattr(config, "num_experts_per_tok", None) or 0
    layer_params = []
    for index in range(n_layers):
        if experts and routed and _is_sparse_layer(config, index):
            expert_width = getattr(config, "moe_intermediate_size", None) or intermediate[index]
            shared = getattr(config, "shared_expert_intermediate_size", None) or (
                (getattr(config, "n_shared_experts", None) or 0) * expert_width
            )
            mlp = mlp_matrices * hidden * (routed * expert_width + shared) + hidden * experts  # + router
        else:
            mlp = mlp_matrices * hidden * intermediate[index]
        layer_params.append(attention + mlp)
    return ModelFlops(
        layer_params=tuple(layer_params),
        head_params=config.vocab_size * hidden,
        attn_dims=(q_dim,) * n_layers,
        windows=_layer_windows(config, n_layers),
    )
