"""Optimizers in place of AdamW, by the name the config switches on (config/optimizer_args.py).

    OPTIMIZERS.get("galore")(model, training_args, optimizer_args, decay_names) -> torch.optim.Optimizer

BaseTrainer mixes in `CustomOptimizerMixin`: its `create_optimizer` (transformers' documented hook) builds the
chosen optimizer and leaves everything else (scheduler, clipping, accelerate's wrapping) to transformers.
Without one of the use_* keys transformers' own `optim` runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmforge.config.optimizer_args import OptimizerArguments
from lmforge.registry import Registry
from lmforge.train.optimizers.builders import (build_adam_mini, build_apollo, build_badam, build_galore,
                                               build_muon, muon_split, require)
from lmforge.train.optimizers.combined import CombinedOptimizer, LayerwiseOptimizer

Builder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[Builder] = Registry("optimizer")
OPTIMIZERS.add("galore", build_galore)
OPTIMIZERS.add("apollo", build_apollo)
OPTIMIZERS.add("badam", build_badam)
OPTIMIZERS.add("adam_mini", build_adam_mini)
OPTIMIZERS.add("muon", build_muon)

__all__ = ["OPTIMIZERS", "CombinedOptimizer", "CustomOptimizerMixin", "LayerwiseOptimizer", "build_optimizer",
           "muon_split"]


def build_optimizer(model, training_args, optimizer_args: OptimizerArguments, decay_names: list[str]):
    """The optimizer `optimizer_args` switches on for `model`, or None (transformers builds `optim`)."""
    if optimizer_args.name is None:
        return None
    return OPTIMIZERS.get(optimizer_args.name)(model, training_args, optimizer_args, decay_names)


class CustomOptimizerMixin:
    """Takes `optimizer_args=` and builds that optimizer in transformers' `create_optimizer` hook."""

    def __init__(self, *args, optimizer_args: OptimizerArguments | None = None, **kwargs):
        self.optimizer_args = optimizer_args if optimizer_args is not None else OptimizerArguments()
        super().__init__(*args, **kwargs)
        if self.optimizer_args.use_badam:
            # BAdam's documented callback: on train begin it stops the embedding output from requiring grad
            # when gradient checkpointing would (only the active block needs gradients).
            self.add_callback(require("badam").BAdamCallback)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.optimizer_args.name is not None:
            opt_model = self.model if model is None else model
            self.optimizer = build_optimizer(opt_model, self.args, self.optimizer_args,
                                             self.get_decay_parameter_names(opt_model))
        return super().create_optimizer(model)
