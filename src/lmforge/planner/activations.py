"""Activation memory of one micro-batch: what autograd keeps from the forward pass for the backward.

    acts = activation_bytes(shape, micro_batch=4, seq_len=2048, compute_bytes=2, weights_in_compute_dtype=False,
                            attention="eager", checkpointing=False, supervised_fraction=1.0)
    acts.layers, acts.weight_copies, acts.loss, acts.total

Two counts live here:

* `textbook_activation_elements`: the count papers use (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", adapted to gated MLPs and without dropout), in elements:
  per layer 8h + 4f per token (norm input, attention input, Q, K, V, output-projection input, MLP norm
  input, MLP input; gate, up, activation and product of the gated MLP) plus, for unfused attention, two
  [heads, s, s] tensors per sequence (scores and probabilities), and h more per token for the final norm.
* `activation_bytes`: what a Hugging Face Llama-style layer (Llama, Qwen2, Mistral...) really keeps,
  tensor by tensor, as read with `torch.autograd.graph.saved_tensors_hooks` on real layers (the tests do
  this comparison). It differs from the textbook in ways that matter for a budget:
    - RMSNorm upcasts to fp32 and keeps its fp32 input and normalised output (4 bytes each) when its
      weight trains, only the input when frozen, plus one fp32 rsqrt per token;
    - under autocast over fp32 weights (mixed precision as HF's Trainer runs it) every linear casts its
      own copy of its input (q, k, v, o, gate, up: 6h per token instead of 3h) and of its weight: a
      compute-dtype copy of every layer matmul weight stays alive from forward to backward;
    - eager attention repeats K and V to all query heads (GQA does not shrink what is kept) and keeps the
      fp32 softmax output plus its compute-dtype copy when the compute dtype is not fp32;
    - fused attention (SDPA, flash) keeps Q, the un-repeated K and V, and one fp32 log-sum-exp per head.
  The loss is lmforge's chunked cross-entropy (`train/losses.py`): it keeps the supervised rows of the
  final hidden state and one fp32 log-sum-exp per supervised token, and needs one fp32 [chunk, vocab]
  buffer (plus one in the compute dtype) while it runs.

Activation checkpointing (every layer, non-reentrant) keeps each layer's input and recomputes one layer at
a time in backward: L·h per token plus one layer's activations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

if TYPE_CHECKING:  # shape building needs torch; the arithmetic here does not
    from lmforge.planner.shape import ModelShape


FUSED_ATTENTION = frozenset({"sdpa", "sdpa_varlen", "varlen_attn", "flash_attention_2", "flash_attention_3", "flex_attention"})
ATTENTION_KINDS = FUSED_ATTENTION | {"eager"}
FP32 = 4


def textbook_activation_elements(shape: ModelShape, *, fused_attention: bool = False) -> tuple[int, int]:
    """(c1, c2) with activation elements per micro-batch = c1·b·s + c2·b·s² over the whole layer stack.

    c1 = L·(8h + 4f) + h; c2 = L·2·heads for unfused attention (two [heads, s, s] tensors per layer), 0 fused.
    """
    h, f, layers = shape.hidden_size, shape.intermediate_size, shape.num_layers
    per_token = layers * (8 * h + 4 * f) + h
    per_square = 0 if fused_attention else layers * 2 * shape.num_heads
    return per_token, per_square


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes kept for backward during one micro-batch, by part."""

    layers: float
    """Decoder layers: all they keep, or with checkpointing only their inputs."""
    recompute: float
    """With checkpointing: the one layer whose activations are rebuilt at a time during backward."""
    weight_copies: float
    """Compute-dtype copies of fp32 matmul weights that autocast makes and the backward keeps."""
    loss: float
    """Final norm, the loss's kept rows and log-sum-exps, and its chunk buffers."""

    @property
    def total(self) -> float:
        return self.layers + self.recompute + self.weight_copies + self.loss


def layer_bytes_per_token(shape: ModelShape, seq_len: int, compute_bytes: int, casts_inputs: bool,
                          attention: str) -> float:
    """Bytes one decoder layer keeps per token at sequence length `seq_len` (see the module docstring)."""
    h, f, heads = shape.hidden_size, shape.intermediate_size, shape.num_heads
    d_q, d_kv = heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    norms = 2 * FP32 + (4 if shape.norm_trains else 2) * h * FP32
    linear_inputs = (6 if casts_inputs else 3) * h * compute_bytes
    if attention == "eager":
        probabilities = heads * seq_len * (FP32 + (compute_bytes if compute_bytes != FP32 else 0))
        attn = 3 * d_q * compute_bytes + probabilities
    else:
        attn = (d_q + 2 * d_kv) * compute_bytes + heads * FP32
    mlp = 4 * f * compute_bytes
    lora = shape.lora_modules_per_layer * shape.lora_rank * compute_bytes
    return norms + linear_inputs + attn + mlp + lora


def activation_bytes(
    shape: ModelShape,
    *,
    micro_batch: int,
    seq_len: int,
    compute_bytes: int,
    weights_in_compute_dtype: bool,
    attention: str = "sdpa",
    checkpointing: bool = False,
    supervised_fraction: float = 1.0,
    loss_chunk: int = 1024,
) -> ActivationBytes:
    """Activation bytes of one micro-batch of `micro_batch` rows of `seq_len` tokens.

    Args:
        compute_bytes: bytes per element of the matmul inputs (2 for bf16/fp16, 4 for fp32).
        weights_in_compute_dtype: the base weights are already in the compute dtype (fp32 training, a
            half model under DeepSpeed, a bf16 LoRA base on GPU); False means autocast over fp32 weights.
        attention: `eager` or a fused kernel name (sdpa, sdpa_varlen, flash_attention_2...).
        supervised_fraction: share of tokens with a loss (1 for pretraining; ~0.3-0.6 for SFT).
        loss_chunk: tokens per chunk of the chunked cross-entropy.
    """
    tokens = micro_batch * seq_len
    casts = compute_bytes != FP32 and not weights_in_compute_dtype
    per_layer = layer_bytes_per_token(shape, seq_len, compute_bytes, casts, attention) * tokens
    residual_bytes = FP32 if (casts or compute_bytes == FP32) else compute_bytes
    # Layers below the lowest trainable one (freeze tuning) run without autograd keeping anything.
    backward_layers = shape.num_layers - min(shape.flops.backprop_from_layer, shape.num_layers)
    recompute = 0.0
    if checkpointing and backward_layers:
        # lmforge (like transformers) makes the embedding output require grad under checkpointing, so
        # every layer keeps its input, frozen ones too.
        layers = shape.num_layers * shape.hidden_size * residual_bytes * tokens
        recompute = per_layer
    else:
        layers = backward_layers * per_layer
    copies = 0.0
    if casts:
        # Without checkpointing each cast weight is kept for its layer's backward; with it, autocast's
        # cache still holds casts of trainable weights until the forward ends (frozen ones are not cached).
        adapters = shape.trainable_matmul_params if shape.lora_rank else 0
        base = shape.layer_matmul_params * backward_layers / shape.num_layers
        if checkpointing:
            base = 0 if shape.lora_rank else min(base, shape.trainable_matmul_params)
        copies = (base + adapters) * compute_bytes
    supervised = tokens * supervised_fraction
    final_norm = ((2 if shape.final_norm_trains else 1) * shape.hidden_size * FP32 + FP32) * tokens
    rows = min(loss_chunk, max(1, int(supervised)))
    chunk = rows * shape.vocab_size * (FP32 + (compute_bytes if compute_bytes != FP32 else 0))
    kept = supervised * (shape.hidden_size * residual_bytes + FP32 + 8)
    return ActivationBytes(layers=layers, recompute=recompute, weight_copies=copies, loss=final_norm + kept + chunk)

