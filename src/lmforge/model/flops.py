"""What a real model trains, for the FLOP count: adapters, trainable fraction, backprop depth.

    from lmforge.model.flops import flops_per_token, model_flops
    mf = model_flops(model.config, model=peft_model)    # LoRA / freeze: only the backward the run needs
    flops_per_token(model.config, seq_len=2048)

The counting convention is in lmforge/arith/flops.py; this module reads a live (or meta-device) model.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from lmforge.arith.flops import _HEADS, _HIDDEN, _LAYER_INDEX, ModelFlops, _first, from_config
from lmforge.logging import get_logger

logger = get_logger(__name__)


def _matmul_modules(model: nn.Module):
    """(name, module, weight) of every matmul layer: nn.Linear and transformers' GPT-2 style Conv1D."""
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor)):
            yield name, module, weight


def _numel(weight: torch.Tensor) -> int:
    # DeepSpeed ZeRO-3 leaves an empty placeholder in each rank's module and the full size in ds_numel.
    return getattr(weight, "ds_numel", None) or weight.numel()


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def from_modules(model: nn.Module, config=None) -> ModelFlops:
    """Shapes counted from a model's Linear layers: the fallback for configs `from_config` cannot read.

    MoE experts stored as fused tensors are not Linear layers and are missed; a quantized Linear reports
    its packed size. Attention widths still come from the config when it has them (else 0: no term).
    """
    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    per_layer: dict[int, int] = {}
    for name, module, weight in _matmul_modules(base):
        if module is head or "lora_" in name:
            continue
        match = _LAYER_INDEX.search(name)
        index = int(match.group(1)) if match else -1
        per_layer[index] = per_layer.get(index, 0) + _numel(weight)
    outside = per_layer.pop(-1, 0)  # matmuls outside the layer stack (projections): charged to layer 0
    layers = [per_layer.get(i, 0) for i in range(max(per_layer, default=-1) + 1)] or [0]
    layers[0] += outside
    config = config if config is not None else getattr(base, "config", None)
    heads = _first(config, _HEADS) if config is not None else None
    hidden = _first(config, _HIDDEN) if config is not None else None
    q_dim = heads * (getattr(config, "head_dim", None) or hidden // heads) if heads and hidden else 0
    return ModelFlops(
        layer_params=tuple(layers),
        head_params=_numel(head.weight) if head is not None else 0,
        attn_dims=(q_dim,) * len(layers),
        windows=(None,) * len(layers),
        source="model modules",
    )


def with_training_setup(flops: ModelFlops, model: nn.Module) -> ModelFlops:
    """Fill in what trains (requires_grad) in `model`: adapters, trainable fraction, backprop depth."""
    base = _unwrap(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    adapters = base_total = base_trainable = 0
    for name, module, weight in _matmul_modules(base):
        if module is head:
            continue
        if "lora_" in name:
            adapters += _numel(weight)
        else:
            base_total += _numel(weight)
            base_trainable += _numel(weight) if weight.requires_grad else 0
    lowest = flops.n_layers
    for name, param in base.named_parameters():
        if not param.requires_grad:
            continue
        match = _LAYER_INDEX.search(name)
        if match:
            lowest = min(lowest, int(match.group(1)))
        elif (embedding is not None and param is getattr(embedding, "weight", None)) or "embed" in name:
            lowest = 0  # a trainable input embedding needs the gradient through every layer
    # The config's layer count is exact; the fraction of Linear weights that train carries over to it.
    fraction = base_trainable / base_total if base_total else float(lowest < flops.n_layers)
    trainable = round(sum(flops.layer_params) * fraction) + adapters
    return replace(
        flops,
        adapter_params=adapters,
        trainable_layer_params=trainable,
        head_trainable=bool(head is not None and head.weight.requires_grad),
        backprop_from_layer=lowest,
    )


def model_flops(config=None, *, model: nn.Module | None = None) -> ModelFlops:
    """Shapes from the config (falling back to the model's Linear layers), trainability from the model.

    Args:
        config: An HF config; default `model.config`.
        model: The model being trained (PEFT-wrapped or not). Without it every weight is taken to train.
    """
    if config is None:
        if model is None:
            raise ValueError("model_flops needs a config or a model")
        config = _unwrap(model).config
    try:
        flops = from_config(config)
    except ValueError as err:
        if model is None:
            raise
        logger.info("FLOPs: %s; counting the model's Linear layers instead", err)
        flops = from_modules(model, config)
    return with_training_setup(flops, model) if model is not None else flops


def flops_per_token(config=None, seq_len: float = 2048, *, model: nn.Module | None = None) -> float:
    """Training FLOPs per token for samples of `seq_len` tokens (PaLM's 6N + 12·L·d_q·T for full training).

    `seq_len` may be an average: for mixed lengths pass Σlen²/Σlen (what the attention term scales with).
    """
    if not seq_len > 0 or not math.isfinite(seq_len):
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    return model_flops(config, model=model).per_token(seq_len)
