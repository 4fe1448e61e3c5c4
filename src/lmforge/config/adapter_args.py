"""The finetuning method with its keys: what model loading, export and the planner need to build the adapter.

    adapter = cfg.adapter                      # AdapterArguments(finetuning_type, lora, freeze)
    model = load_model(cfg.model, adapter, is_trainable=True)

Not a config group of its own: a view over the `finetuning`, `lora`, `freeze` and (QLoRA) `quantization` groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from lmforge.config.finetuning_args import FinetuningType
from lmforge.config.freeze_args import FreezeArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.config.quantization_args import QuantizationArguments


class HasAdapter:
    """For a config dataclass with `finetuning`, `lora` and `freeze` groups (and `quantization`, where the config
    has one): their adapter view."""

    @property
    def adapter(self) -> AdapterArguments:
        """finetuning_type with the lora / freeze / quantization keys: what model loading needs."""
        return AdapterArguments(self.finetuning.finetuning_type, self.lora, self.freeze,
                                getattr(self, "quantization", QuantizationArguments()))


@dataclass(frozen=True)
class AdapterArguments:
    finetuning_type: FinetuningType = "lora"
    lora: LoraArguments = field(default_factory=LoraArguments)
    freeze: FreezeArguments = field(default_factory=FreezeArguments)
    quantization: QuantizationArguments = field(default_factory=QuantizationArguments)  # the base's, for QLoRA

    @classmethod
    def from_keys(cls, finetuning_type: FinetuningType = "lora", **keys) -> AdapterArguments:
        """From flat lora_* / freeze_* keys, as a YAML writes them: `AdapterArguments.from_keys("lora", lora_rank=4)`."""
        groups: dict[type, dict] = {LoraArguments: {}, FreezeArguments: {}}
        for key, value in keys.items():
            owner = next((g for g in groups if key in {f.name for f in fields(g)}), None)
            if owner is None:
                raise TypeError(f"'{key}' is neither a lora nor a freeze key")
            groups[owner][key] = value
        return cls(finetuning_type, LoraArguments(**groups[LoraArguments]), FreezeArguments(**groups[FreezeArguments]))
