"""LoRA (and DoRA / rsLoRA) through PEFT: small trainable low-rank updates on frozen linear layers.

    finetuning_type: lora
    lora_rank: 8
    lora_alpha: 16                   # default 2 * lora_rank
    lora_target: all                 # every linear layer but the output head; or q_proj,v_proj
    additional_target: embed_tokens  # trained in full beside the adapters (PEFT modules_to_save)
    adapter_name_or_path: a,b        # merge a into the base, then keep training b
    loraplus_lr_ratio: 16            # LoRA+: B learns 16x faster than A (train/loraplus.py)
    pissa_init: true                 # PiSSA: A, B from W's top singular vectors; W keeps the residual
    pissa_convert: true              # also save a plain LoRA for the original base (train/callbacks/pissa.py)

Existing adapters follow LLaMA-Factory: when training, every adapter but the last is merged into the base
and the last one keeps training (its own saved rank and targets apply); with `create_new_adapter` or when
not training, all of them are merged (and a fresh adapter starts, when training).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.errors import ConfigError, ModelError
from lmforge.logging import get_logger
from lmforge.model.adapters.targets import (
    check_lora_targets,
    check_module_names,
    find_expert_parameter_names,
    find_linear_module_names,
    modules_named,
    split_names,
)

logger = get_logger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_FIELDS = frozenset(getattr(LoraConfig, "__dataclass_fields__", {}))
"""LoraConfig's options in the installed PEFT (older releases lack ensure_weight_tying)."""


def apply_lora(
    model: nn.Module,
    adapter: AdapterArguments,
    *,
    is_trainable: bool,
    adapter_paths: Sequence[str] = (),
) -> nn.Module:
    """Merge / load existing adapters, then (when training) add a new LoRA adapter unless one is resumed.

    Args:
        model: the base model.
        adapter: the lora group (lora_* keys and `create_new_adapter`).
        is_trainable: whether the adapter will be trained (else adapters are merged for inference).
        adapter_paths: local adapter directories from `adapter_name_or_path`, in order.

    Returns:
        A `PeftModel` when an adapter trains; the (merged) base model otherwise.

    Raises:
        ModelError: an adapter directory is missing or holds no safetensors weights.
        ConfigError: a `lora_target` / `additional_target` name the model lacks.
    """
    paths = [check_adapter_dir(path) for path in adapter_paths]
    if adapter.quantization.enabled and paths:
        # merging into 4 / 8-bit weights would requantize them (LLaMA-Factory: "unstable"): the one adapter a
        # quantized base takes stays a separate module; `lmforge export` merges into the dequantized base instead
        if len(paths) > 1:
            raise ConfigError("adapter_name_or_path: a quantized base (quantization_bit) takes one adapter; merge "
                              "the others first with lmforge export")
        if not is_trainable:
            with quiet_peft_alias():
                model = PeftModel.from_pretrained(model, paths[0])
            logger.info("LoRA adapter %s on the %d-bit base, unmerged", paths[0], adapter.quantization.quantization_bit)
            return model
    resume = paths[-1] if paths and is_trainable and not adapter.lora.create_new_adapter else None
    to_merge = paths[:-1] if resume else paths
    for path in to_merge:
        # merge_and_unload folds B @ A into the base weights and returns the plain model, so the next
        # adapter is applied on top of the previous ones exactly as it was trained.
        with quiet_peft_alias():
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if to_merge:
        logger.info("merged %d adapter(s) into the base model: %s", len(to_merge), ", ".join(to_merge))
    if resume is not None:
        logger.info("continuing LoRA adapter %s (its saved rank and targets apply; lora_* keys are ignored)", resume)
        with quiet_peft_alias():
            return PeftModel.from_pretrained(model, resume, is_trainable=True)
    if not is_trainable:
        return model
    config = build_lora_config(model, adapter.lora)
    logger.info(
        "fine-tuning method: %s%s; rank %d, alpha %d on %s",
        "DoRA" if config.use_dora else "LoRA",
        f" (PiSSA init, {config.init_lora_weights})" if adapter.lora.pissa_init else "",
        config.r,
        config.lora_alpha,
        ",".join(sorted(config.target_modules)),
    )
    wanted = [path for name in config.target_modules for path, _ in modules_named(model, name)]
    with quiet_peft_alias():
        peft_model = get_peft_model(model, config)
    warn_unadapted(model, wanted)
    return peft_model


def warn_unadapted(model: nn.Module, wanted: list[str]) -> None:
    """Say which named modules PEFT left without an adapter.

    PEFT 0.21 rewrites the targets of MoE families whose experts transformers 5 fused (DeepSeek-V3, Qwen2-MoE,
    Mixtral: `convert_peft_config_for_transformers`, meant for loading transformers-4 adapters): `gate_proj`,
    `up_proj`, `down_proj` are taken to mean the routed experts and dropped from the module targets, so a dense
    MLP with those names (DeepSeek-V3's first layers, its shared experts) trains without an adapter. The result
    is still consistent (export and chat reload the same adapter), but it is not what the names asked for.
    """
    missed = sorted(path for path in set(wanted) if not hasattr(model.get_submodule(path), "lora_A"))
    if missed:
        family = getattr(model.config, "model_type", type(model).__name__)
        more = f" (and {len(missed) - 3} more)" if len(missed) > 3 else ""
        logger.warning(
            "%s: PEFT left %d module(s) named by lora_target without an adapter: %s%s (PEFT maps these names onto "
            "the fused MoE experts of this family); they stay frozen", family, len(missed), ", ".join(missed[:3]), more
        )


@contextmanager
def quiet_peft_alias() -> Iterator[None]:
    """Hide the one FutureWarning PEFT's own code triggers while it wraps a model.

    `PeftModel.__init__` (PEFT 0.21) reads `model.is_gradient_checkpointing`, which transformers 5 renamed to
    `is_activation_checkpointing`; the old name warns on every adapter built or loaded (training, chat, api,
    export). The read is PEFT's, so there is no call of ours to rename: the filter matches that message only,
    and only for the duration of the wrap. tests/model/test_quiet_loading.py fails once PEFT stops reading the
    old name, so this can go then.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def build_lora_config(model: nn.Module, lora: LoraArguments) -> LoraConfig:
    """The PEFT LoraConfig for the lora_* keys, with target names checked against the model."""
    targets = split_names(lora.lora_target)
    expert_parameters: list[str] = []
    if not targets or targets == ["all"]:
        targets = find_linear_module_names(model)
        if "target_parameters" in LORA_FIELDS:
            expert_parameters = find_expert_parameter_names(model)
    else:
        check_lora_targets(model, targets, key="lora_target")
    extra = split_names(lora.additional_target)
    check_module_names(model, extra, key="additional_target")
    options = {}
    if expert_parameters:
        options["target_parameters"] = expert_parameters
    if extra and getattr(model.config, "tie_word_embeddings", False) and "ensure_weight_tying" in LORA_FIELDS:
        # With tied embeddings, training a copy of embed_tokens would leave lm_head on the old weight
        # (and a merged export would then differ from what trained); keep the head tied to the copy.
        options["ensure_weight_tying"] = True
    if lora.pissa_init:
        # PiSSA (PEFT's init): A, B = the top-r singular triplets of W, W keeps the residual, so the model starts
        # where the base was; pissa_niter_N uses the randomised fast SVD with N iterations (LLaMA-Factory's keys)
        options["init_lora_weights"] = "pissa" if lora.pissa_iter == -1 else f"pissa_niter_{lora.pissa_iter}"
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.lora_rank,
        lora_alpha=lora.lora_alpha_value,
        lora_dropout=lora.lora_dropout,
        target_modules=targets,
        modules_to_save=extra or None,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        **options,
    )


def check_adapter_dir(path: str, revision: str = "main") -> str:
    """Return `path` if it is a local PEFT adapter directory with safetensors weights.

    `.bin` adapters are refused like `.bin` models: unpickling can run code (see loader.py). A hub id
    (`org/name`) that is not a local path is read from the Hugging Face cache at `revision`, offline, and its
    snapshot directory returned (lmforge.model.hub_cache).
    """
    from lmforge.hub_cache import looks_like_hub_id, not_cached_message, resolve_hub_id

    directory = Path(path)
    if not directory.is_dir() and looks_like_hub_id(path):
        snapshot = resolve_hub_id(path, revision)
        if snapshot is None:
            raise ModelError(not_cached_message("adapter_name_or_path", path, revision))
        directory, path = snapshot, str(snapshot)
    if not (directory / ADAPTER_CONFIG).is_file():
        raise ModelError(
            f"adapter_name_or_path: {path} is not a LoRA adapter directory (no {ADAPTER_CONFIG}); "
            "point it at a directory saved by a lora run (its output_dir or a checkpoint-N inside it)"
        )
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise ModelError(
            f"adapter_name_or_path: {path} has no {ADAPTER_WEIGHTS}; lmforge loads safetensors only "
            "(re-save the adapter with save_pretrained(..., safe_serialization=True))"
        )
    return path
