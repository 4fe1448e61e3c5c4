"""What the planner needs to know about a model: its dimensions and which parameters train.

    shape = load_shape("models/qwen2.5-1.5b", AdapterArguments("lora", LoraArguments(lora_rank=16)))
    shape.total_params, shape.trainable_params, shape.hidden_size

The model is built on the meta device (no memory, no weights read) from its `config.json` and the real
`finetuning_type` adapter from `lmforge.model.adapters` is applied to it, so parameter counts, tied
embeddings, LoRA targets and frozen layers are exactly what training would see, for any architecture
transformers knows. Only the activation model (activations.py) assumes Llama-style decoder layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmforge.config.adapter_args import AdapterArguments
from lmforge.errors import ModelError
from lmforge.arith.flops import ModelFlops
from lmforge.model.flops import model_flops


@dataclass(frozen=True)
class ModelShape:
    """Dimensions and parameter counts of one model under one finetuning setup (counts, not bytes)."""

    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    total_params: int
    """Every parameter, a tied embedding counted once (adapters included)."""
    trainable_params: int
    layer_matmul_params: int
    """Weights of the nn.Linear modules inside the decoder layers (the base, adapters excluded)."""
    trainable_matmul_params: int
    """Trainable weights of matmuls (layers' linears, LoRA matrices, lm_head): what autocast casts per step."""
    largest_layer_params: int
    """Parameters of the largest decoder layer (ZeRO-3 gathers one at a time)."""
    trainable_shapes: tuple[tuple[int, ...], ...]
    """Shape of every trainable parameter (factored optimizers size their states from these)."""
    lora_rank: int
    lora_modules_per_layer: int
    norm_trains: bool
    """Whether the decoder layers' norm weights train (they then keep more activations, see activations.py)."""
    final_norm_trains: bool
    flops: ModelFlops

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params


def read_config(path: str | Path):
    """A transformers config from a `config.json` file or a directory holding one.

    Raises:
        ModelError: the path is missing, holds no config.json, or is not valid JSON / not a known model type.
    """
    from transformers import AutoConfig

    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        hint = " (a directory without config.json)" if path.is_dir() else ""
        raise ModelError(f"{path}: no model config found{hint}; pass a config.json or a model directory")
    try:
        fields = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ModelError(f"{file}: no 'model_type'; it is needed to know the architecture")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except ValueError as exc:
        raise ModelError(f"{file}: {exc}") from None


def load_shape(path: str | Path, adapter: AdapterArguments | None = None) -> ModelShape:
    """Build the model on the meta device, apply the finetuning adapter, and read its shape."""
    from transformers import AutoModelForCausalLM

    from lmforge.model.adapters import ADAPTERS

    adapter = adapter or AdapterArguments(finetuning_type="full")
    config = read_config(path)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError as exc:
            raise ModelError(f"{path}: transformers has no causal LM for this config ({exc})") from None
        model = ADAPTERS.get(adapter.finetuning_type)(model, adapter, is_trainable=True)
    return shape_of(model, config, name=str(path), adapter=adapter)


def shape_of(model: nn.Module, config, *, name: str, adapter: AdapterArguments) -> ModelShape:
    """Read a (meta or real) model's shape; see `load_shape`."""
    from lmforge.model.adapters.targets import find_decoder_layers, is_in_layer

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = text.num_hidden_layers
    _, layers = find_decoder_layers(model, num_layers)
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    trainable = [p for p in unique if p.requires_grad]

    layer_matmul = 0
    for layer in layers:
        for path, module in layer.named_modules():
            if isinstance(module, nn.Linear) and "lora_" not in path:
                layer_matmul += module.weight.numel()
    trainable_matmul = sum(p.numel() for p in trainable if p.dim() == 2 and not _is_embedding_weight(model, p))
    head = model.get_output_embeddings()
    if head is not None and head.weight.requires_grad and _is_embedding_weight(model, head.weight):
        trainable_matmul += head.weight.numel()  # tied: the embedding matrix is also the lm_head matmul

    lora = adapter.finetuning_type == "lora"
    lora_modules = sum(1 for m in layers[0].modules() if lora and hasattr(m, "lora_A"))
    norm_trains = any(
        p.requires_grad for m in layers[-1].modules() if "norm" in type(m).__name__.lower()
        for p in m.parameters(recurse=False)
    )
    final_norm_trains = any(
        p.requires_grad for n, p in model.named_parameters() if "norm" in n and not is_in_layer(n)
    )
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        name=name,
        model_type=text.model_type,
        num_layers=num_layers,
        hidden_size=text.hidden_size,
        intermediate_size=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        num_heads=heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab_size=text.vocab_size,
        tied_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        total_params=total,
        trainable_params=sum(p.numel() for p in trainable),
        layer_matmul_params=layer_matmul,
        trainable_matmul_params=trainable_matmul,
        largest_layer_params=max(sum(p.numel() for p in layer.parameters()) for layer in layers),
        trainable_shapes=tuple(tuple(p.shape) for p in trainable),
        lora_rank=adapter.lora.lora_rank if lora else 0,
        lora_modules_per_layer=lora_modules,
        norm_trains=norm_trains,
        final_norm_trains=final_norm_trains,
        flops=model_flops(config, model=model),
    )


def _is_embedding_weight(model: nn.Module, param: torch.Tensor) -> bool:
    embedding = model.get_input_embeddings()
    return embedding is not None and embedding.weight is param
