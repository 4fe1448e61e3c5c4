"""One builder per optimizer name: (model, training args, optimizer args, decay names) -> torch optimizer.

Behaviour follows LLaMA-Factory's trainer_utils (_create_galore_optimizer ... _create_muon_optimizer): the same
parameter choices, the `optim` key naming the base optimizer, learning rate / betas / eps / weight decay from
the training arguments. The libraries are optional extras; a missing one is a ConfigError naming the extra.
"""

from __future__ import annotations

import importlib
import sys

import torch
from torch import nn

from lmforge.config.optimizer_args import OptimizerArguments
from lmforge.errors import ConfigError
from lmforge.logging import get_logger
from lmforge.model.adapters.targets import find_linear_module_names, split_names
from lmforge.train.optimizers.combined import CombinedOptimizer, LayerwiseOptimizer

logger = get_logger(__name__)

_PACKAGES = {  # import name -> (key, extra, PyPI name)
    "galore_torch": ("use_galore", "galore", "galore-torch"),
    "apollo_torch": ("use_apollo", "apollo", "apollo-torch"),
    "badam": ("use_badam", "badam", "badam"),
    "adam_mini": ("use_adam_mini", "adam-mini", "adam-mini"),
}


def require(module: str):
    """The optional library `module`, or a ConfigError naming the key that asked for it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        key, extra, package = _PACKAGES[module]
        raise ConfigError(f"{key}: needs {package}; pip install -e '.[{extra}]' (or pip install {package})") from None


def _adam_kwargs(args) -> dict:
    return {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}


def _trainable(model: nn.Module):
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _projected_params(model: nn.Module, target: str) -> list[nn.Parameter]:
    """Trainable linear weights of the modules named in `target` (substrings of module paths, LLaMA-Factory's
    rule), or of every linear but the output head for `all`."""
    names = split_names(target)
    if names == ["all"]:
        names = find_linear_module_names(model)
    found = [m.weight for path, m in model.named_modules()
             if isinstance(m, nn.Linear) and any(n in path for n in names) and m.weight.requires_grad]
    if not found:
        raise ConfigError(f"'{target}' names no trainable linear layer of this model "
                          f"(its linears: {', '.join(find_linear_module_names(model))})")
    return found


def _split_by_decay(model, decay_names: list[str], skip: set[int]) -> tuple[list, list]:
    decay, no_decay = [], []
    for name, p in _trainable(model):
        if id(p) not in skip:
            (decay if name in decay_names else no_decay).append(p)
    return decay, no_decay


def _one_process(key: str) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise ConfigError(f"{key}: layer-wise stepping runs on one process; remove it or train on one device")


def _projected(model, args, decay_names, projected, group_kwargs, cls, base_kwargs, layerwise, key):
    skip = {id(p) for p in projected}
    decay, no_decay = _split_by_decay(model, decay_names, skip)
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": projected, "weight_decay": args.weight_decay, **group_kwargs},
    ]
    if not layerwise:
        return cls([g for g in groups if g["params"]], **base_kwargs)
    _one_process(key)
    per_param = {p: cls([{**g, "params": [p]}], **base_kwargs) for g in groups for p in g["params"]}
    return LayerwiseOptimizer(per_param)


def build_galore(model, args, opt: OptimizerArguments, decay_names: list[str]) -> torch.optim.Optimizer:
    galore = require("galore_torch")
    if args.optim == "adafactor":
        cls, base = galore.GaLoreAdafactor, {"lr": args.learning_rate, "scale_parameter": False, "relative_step": False}
    elif "8bit" in args.optim:
        cls, base = galore.GaLoreAdamW8bit, _adam_kwargs(args)
    else:  # adamw_torch, adamw_torch_fused (config/validate.py allows no other)
        cls, base = galore.GaLoreAdamW, _adam_kwargs(args)
    group = {"rank": opt.galore_rank, "update_proj_gap": opt.galore_update_interval, "scale": opt.galore_scale,
             "proj_type": opt.galore_proj_type}
    projected = _projected_params(model, opt.galore_target)
    logger.info("GaLore on %d matrices (rank %d, projection every %d steps)", len(projected), opt.galore_rank,
                opt.galore_update_interval)
    return _projected(model, args, decay_names, projected, group, cls, base, opt.galore_layerwise, "galore_layerwise")


def build_apollo(model, args, opt: OptimizerArguments, decay_names: list[str]) -> torch.optim.Optimizer:
    apollo = require("apollo_torch")
    group = {"rank": opt.apollo_rank, "proj": opt.apollo_proj, "proj_type": opt.apollo_proj_type,
             "update_proj_gap": opt.apollo_update_interval, "scale": opt.apollo_scale,
             "scale_type": opt.apollo_scale_type, "scale_front": opt.apollo_scale_front}
    projected = _projected_params(model, opt.apollo_target)
    logger.info("APOLLO on %d matrices (rank %d, %s scaling)", len(projected), opt.apollo_rank, opt.apollo_scale_type)
    return _projected(model, args, decay_names, projected, group, apollo.APOLLOAdamW, _adam_kwargs(args),
                      opt.apollo_layerwise, "apollo_layerwise")


def build_badam(model, args, opt: OptimizerArguments, decay_names: list[str]) -> torch.optim.Optimizer:
    badam = require("badam")
    decay, no_decay = _split_by_decay(model, decay_names, set())
    # BlockOptimizer gives the active block's decayed weights the decay of the *first* group: decay first
    # (LLaMA-Factory puts the no-decay group first, so its BAdam runs without weight decay).
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    named = list(model.named_parameters())
    if opt.badam_mode == "ratio":
        return badam.BlockOptimizerRatio(
            param_groups=groups, named_parameters_list=named, update_ratio=opt.badam_update_ratio,
            mask_mode=opt.badam_mask_mode, verbose=opt.badam_verbose, include_embedding=False,
            # it freezes the parameter named lm_head; a tied model has none (the embedding, frozen, is the head)
            include_lm_head=not any("lm_head" in name for name, _ in named), **_adam_kwargs(args),
        )
    base = torch.optim.AdamW(groups, **_adam_kwargs(args))
    interval = opt.badam_switch_interval
    # -1: never switch. BAdam itself tests (step + 1) % interval == 0, which -1 would make true at every step.
    every = sys.maxsize if interval in (None, -1) else interval
    return badam.BlockOptimizer(
        base_optimizer=base, named_parameters_list=named, block_prefix_list=None, switch_block_every=every,
        start_block=opt.badam_start_block, switch_mode=opt.badam_switch_mode or "ascending",
        verbose=opt.badam_verbose,
    )


def build_adam_mini(model, args, opt: OptimizerArguments, decay_names: list[str]) -> torch.optim.Optimizer:
    adam_mini = require("adam_mini")
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    return adam_mini.Adam_mini(
        named_parameters=model.named_parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon, weight_decay=args.weight_decay, dim=getattr(config, "hidden_size", None),
        n_heads=heads, n_kv_heads=getattr(config, "num_key_value_heads", None) or heads, verbose=False,
    )


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's parameters, AdamW's): the trainable 2-D hidden matrices, and the embeddings, the output head and
    every vector (LLaMA-Factory's rule; the embeddings and head are found by module, not by name)."""
    outer = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter)() if hasattr(model, getter) else None
        if module is not None and getattr(module, "weight", None) is not None:
            outer.add(id(module.weight))
    muon, adamw = [], []
    for name, p in _trainable(model):
        hidden = p.ndim == 2 and id(p) not in outer and "embed" not in name and "lm_head" not in name
        (muon if hidden else adamw).append(p)
    return muon, adamw


def build_muon(model, args, opt: OptimizerArguments, decay_names: list[str]) -> torch.optim.Optimizer:
    muon_params, adamw_params = muon_split(model)
    parts = []
    if muon_params:
        # match_rms_adamw scales each matrix's update to AdamW's RMS, so one learning_rate suits both parts
        # (Moonlight's recipe, as LLaMA-Factory's Muon does).
        parts.append(torch.optim.Muon(muon_params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                      adjust_lr_fn="match_rms_adamw"))
    if adamw_params:
        parts.append(torch.optim.AdamW(adamw_params, weight_decay=args.weight_decay, **_adam_kwargs(args)))
    logger.info("Muon on %d matrices, AdamW on %d other parameters", len(muon_params), len(adamw_params))
    return CombinedOptimizer(parts)
