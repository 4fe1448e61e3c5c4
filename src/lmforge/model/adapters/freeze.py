"""Freeze tuning: train a few decoder layers (and optionally a few modules around them), freeze the rest.

    finetuning_type: freeze
    freeze_trainable_layers: 2          # the last 2 layers; -2 = the first 2
    freeze_trainable_modules: mlp       # inside those layers: all, or names such as mlp,self_attn
    freeze_extra_modules: embed_tokens  # outside the layers: e.g. embed_tokens,norm,lm_head
    use_llama_pro: true                 # LLaMA Pro: train only the freeze_trainable_layers expanded blocks

Same keys and meaning as LLaMA-Factory, with two deliberate differences: a layer count larger than the
model is an error instead of being clipped, and extra modules are matched by name (`norm` is the final
norm only) rather than by substring (which in LLaMA-Factory also unfreezes every `*_layernorm`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lmforge.config.adapter_args import AdapterArguments
from lmforge.errors import ConfigError, did_you_mean
from lmforge.logging import get_logger
from lmforge.model.adapters.targets import (
    find_decoder_layers,
    find_extra_module_names,
    is_in_layer,
    modules_named,
    split_names,
)

logger = get_logger(__name__)

LAYER_COUNT_KEYS = ("num_hidden_layers", "num_layers", "n_layer")
"""Config attributes that hold the number of decoder layers, across model families."""


def apply_freeze(
    model: nn.Module,
    adapter: AdapterArguments,
    *,
    is_trainable: bool,
    adapter_paths: Sequence[str] = (),
) -> nn.Module:
    """Freeze everything, then unfreeze the chosen layers' modules and the extra modules.

    Raises:
        ConfigError: a layer count out of range, a module name the model lacks (with did-you-mean), or
            a choice that leaves nothing to train.
    """
    if not is_trainable:
        return model
    num_layers = count_layers(model.config)
    if adapter.freeze.use_llama_pro:
        layer_ids = expanded_layer_ids(adapter.freeze.freeze_trainable_layers, num_layers)
    else:
        layer_ids = trainable_layer_ids(adapter.freeze.freeze_trainable_layers, num_layers)
    _, layers = find_decoder_layers(model, num_layers)
    inner = resolve_layer_modules(layers[0], split_names(adapter.freeze.freeze_trainable_modules))
    extras = split_names(adapter.freeze.freeze_extra_modules)
    check_extra_modules(model, extras)
    if not layer_ids and not extras:
        raise ConfigError(
            "freeze_trainable_layers: 0 and no freeze_extra_modules leaves nothing to train; "
            "set freeze_trainable_layers to N (last N layers) or -N (first N)"
        )

    model.requires_grad_(False)
    for idx in layer_ids:
        for name in inner:
            layers[idx].get_submodule(name).requires_grad_(True)
    for name in extras:
        for path, module in modules_named(model, name):
            if not is_in_layer(path):
                module.requires_grad_(True)

    logger.info(
        "fine-tuning method: freeze; training layers %s (%s) of %d%s",
        ",".join(map(str, layer_ids)) or "none",
        ",".join(inner) or "all",
        num_layers,
        f" plus {','.join(extras)}" if extras else "",
    )
    return model


def count_layers(config) -> int:
    """Number of decoder layers from the model config (the text config of composite models)."""
    config = getattr(config, "text_config", None) or config
    for key in LAYER_COUNT_KEYS:
        value = getattr(config, key, None)
        if value:
            return int(value)
    raise ConfigError(
        f"finetuning_type 'freeze' needs the layer count, and this model's config has none of "
        f"{', '.join(LAYER_COUNT_KEYS)}; use finetuning_type: lora or full"
    )


def trainable_layer_ids(n: int, num_layers: int) -> list[int]:
    """`n > 0`: the last n layers; `n < 0`: the first |n|; `0`: none."""
    if abs(n) > num_layers:
        raise ConfigError(
            f"freeze_trainable_layers: {n} asks for {abs(n)} layers but the model has {num_layers}; "
            f"choose a value between -{num_layers} and {num_layers}"
        )
    return list(range(num_layers - n, num_layers)) if n > 0 else list(range(-n))


def expanded_layer_ids(n: int, num_layers: int) -> list[int]:
    """LLaMA Pro: the positions of the n blocks an expansion inserted, one after every (num_layers - n) / n
    original blocks, so the last of every group of num_layers / n layers (LLaMA-Factory's stride rule)."""
    if n <= 0 or num_layers % n:
        raise ConfigError(
            f"use_llama_pro: freeze_trainable_layers ({n}) is the number of blocks the model was expanded with and "
            f"must divide its {num_layers} layers (one new block after every equal group of original ones)"
        )
    stride = num_layers // n
    return list(range(stride - 1, num_layers, stride))


def resolve_layer_modules(layer: nn.Module, names: list[str]) -> list[str]:
    """Check `freeze_trainable_modules` against one decoder layer; `all` (or nothing) -> `[""]`, the layer.

    A name is a child of the layer (`mlp`, `self_attn`) or a dotted path inside it (`self_attn.q_proj`).
    """
    if not names or "all" in names:
        return [""]
    available = sorted(name for name, child in layer.named_children() if any(True for _ in child.parameters()))
    for name in names:
        try:
            layer.get_submodule(name)
        except AttributeError:
            raise ConfigError(
                f"freeze_trainable_modules '{name}' is not a module of the decoder layers"
                f"{did_you_mean(name, available)}; available: all, {', '.join(available)}"
            ) from None
    return names


def check_extra_modules(model: nn.Module, names: list[str]) -> None:
    available = find_extra_module_names(model)
    for name in names:
        if name not in available:
            raise ConfigError(
                f"freeze_extra_modules '{name}' is not a module outside the decoder layers"
                f"{did_you_mean(name, available)}; available: {', '.join(available)}"
            )
