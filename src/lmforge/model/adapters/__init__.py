"""Which parameters train: one function per `finetuning_type`, looked up in ADAPTERS.

    apply = ADAPTERS.get(adapter.finetuning_type)   # full | freeze | lora
    model = apply(model, adapter, is_trainable=True, adapter_paths=["saves/lora"])

Every entry has the signature of `Adapter`: it returns the model to train (possibly wrapped, as PEFT
does) with `requires_grad` set on exactly the parameters that should train. Casting those to fp32 is
left to the loader, so each entry stays about selection only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import nn

from lmforge.config.adapter_args import AdapterArguments
from lmforge.model.adapters.freeze import apply_freeze
from lmforge.model.adapters.full import apply_full
from lmforge.model.adapters.lora import apply_lora
from lmforge.model.adapters.targets import find_linear_module_names
from lmforge.registry import Registry


class Adapter(Protocol):
    def __call__(
        self,
        model: nn.Module,
        adapter: AdapterArguments,
        *,
        is_trainable: bool,
        adapter_paths: Sequence[str] = (),
    ) -> nn.Module: ...


ADAPTERS: Registry[Adapter] = Registry("finetuning_type")
ADAPTERS.add("full", apply_full)
ADAPTERS.add("freeze", apply_freeze)
ADAPTERS.add("lora", apply_lora)

__all__ = ["ADAPTERS", "Adapter", "apply_freeze", "apply_full", "apply_lora", "find_linear_module_names"]
