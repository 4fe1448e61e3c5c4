"""Which modules of a model LoRA and freeze tuning can name, and checks that a user's names exist.

    >>> find_linear_module_names(model)          # a Qwen2 / Llama decoder
    ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']

The names are the last component of a module path (`q_proj`, not `model.layers.0.self_attn.q_proj`),
because that is how `lora_target` / `additional_target` are written in LLaMA-Factory YAMLs and how PEFT
matches `target_modules` (a name matches every module whose path ends with it).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

from lmforge.errors import ConfigError, did_you_mean

LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)
"""Layers LoRA treats as linear. GPT-2 style models use transformers' Conv1D (a transposed Linear)."""

LORA_TYPES: tuple[type[nn.Module], ...] = (*LINEAR_TYPES, nn.Embedding)
"""Layers PEFT can put a LoRA update on when named explicitly."""


def split_names(value: str | Iterable[str] | None) -> list[str]:
    """`"a, b,c"` -> `["a", "b", "c"]`; None or empty -> `[]`. Lists pass through, stripped."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def leaf_name(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def find_linear_module_names(model: nn.Module) -> list[str]:
    """Sorted leaf names of every linear layer except the output head (what `lora_target: all` means).

    The head is found through `get_output_embeddings()` rather than a table of names (`lm_head`,
    `output`, `output_layer`, ...): adapting the vocabulary projection costs many parameters for little
    gain, and LLaMA-Factory leaves it out too.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {
        leaf_name(path)
        for path, module in model.named_modules()
        if isinstance(module, LINEAR_TYPES) and module is not head and path
    }
    return sorted(names)


def find_expert_parameter_names(model: nn.Module) -> list[str]:
    """Sorted `module.parameter` names of stacked MoE expert weights (what `lora_target: all` adds for MoE).

    transformers 5 stores the routed experts of Mixtral, Qwen3-MoE, DeepSeek-V3 ... as 3-D parameters
    (`experts.gate_up_proj` of shape [experts, out, in]) rather than one nn.Linear per expert, so
    `find_linear_module_names` misses them and "all" would leave every routed expert without an adapter.
    PEFT adapts such parameters through `target_parameters` (a LoRA per expert, merged like any other).
    """
    names = set()
    for path, module in model.named_modules():
        if not is_in_layer(path):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if param.dim() == 3:
                names.add(f"{leaf_name(path)}.{param_name}")
    return sorted(names)


def modules_named(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """Modules whose path equals `name` or ends with `.name` (PEFT's matching rule for plain names)."""
    return [
        (path, module)
        for path, module in model.named_modules()
        if path and (path == name or path.endswith("." + name))
    ]


def check_lora_targets(model: nn.Module, names: list[str], key: str = "lora_target") -> None:
    """Raise ConfigError when a name matches no module, or only modules LoRA cannot adapt.

    Args:
        model: the model the adapter goes on.
        names: leaf names or dotted path suffixes from the config.
        key: the config key the names came from, cited in the message.
    """
    available = find_linear_module_names(model)
    for name in names:
        matches = modules_named(model, name)
        if not matches:
            raise ConfigError(
                f"{key} '{name}' matches no module of this model{did_you_mean(name, available)}; "
                f"available: {', '.join(available)}"
            )
        if not any(isinstance(module, LORA_TYPES) for _, module in matches):
            kind = type(matches[0][1]).__name__
            raise ConfigError(
                f"{key} '{name}' names a {kind}, which LoRA cannot adapt; name its linear layers instead: "
                f"{', '.join(available)}"
            )


def find_extra_module_names(model: nn.Module) -> list[str]:
    """Sorted leaf names of modules outside the numbered layers that hold parameters themselves.

    For a Qwen2 / Llama decoder: `embed_tokens`, `lm_head`, `norm` — what `freeze_extra_modules` and
    `additional_target` usually name. A tied `lm_head` is listed: it shares its weight with
    `embed_tokens`, so naming either trains that one matrix.
    """
    return sorted(
        {
            leaf_name(path)
            for path, module in model.named_modules()
            if path and not is_in_layer(path) and any(True for _ in module.parameters(recurse=False))
        }
    )


def check_module_names(model: nn.Module, names: list[str], key: str) -> None:
    """Raise ConfigError when a name (e.g. in `additional_target`) matches no module of the model."""
    for name in names:
        if not modules_named(model, name):
            choices = find_extra_module_names(model)
            raise ConfigError(
                f"{key} '{name}' matches no module of this model{did_you_mean(name, choices)}; "
                f"available outside the decoder layers: {', '.join(choices)}"
            )


def find_decoder_layers(model: nn.Module, num_layers: int) -> tuple[str, nn.ModuleList]:
    """The path and ModuleList of the transformer blocks.

    Found structurally, not by a table of attribute names (`model.layers`, `transformer.h`, ...): the
    largest (by parameters) ModuleList with exactly `num_layers` entries.

    Raises:
        ConfigError: no such list (the model is not a stack of decoder layers freeze tuning understands).
    """
    candidates = [
        (sum(p.numel() for p in module.parameters()), path, module)
        for path, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    if not candidates:
        raise ConfigError(
            f"finetuning_type 'freeze' needs a stack of {num_layers} decoder layers, and this model has none; "
            "use finetuning_type: lora or full"
        )
    _, path, layers = max(candidates, key=lambda c: c[0])
    return path, layers


def is_in_layer(path: str) -> bool:
    """True for paths inside a numbered container (`model.layers.3.mlp`); LLaMA-Factory's rule too."""
    return any(part.isdigit() for part in path.split("."))
