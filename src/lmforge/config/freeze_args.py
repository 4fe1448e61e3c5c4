"""finetuning_type freeze: which layers and modules train (LLaMA-Factory's freeze_* keys)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FreezeArguments:
    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "Train the last N layers (positive) or the first N (negative)."},
    )
    freeze_trainable_modules: str = field(
        default="all",
        metadata={"help": "Comma-separated module names inside the trainable layers (e.g. mlp,self_attn), or all."},
    )
    freeze_extra_modules: str | None = field(
        default=None, metadata={"help": "Extra modules outside the layers to train (e.g. embed_tokens,norm)."}
    )
    use_llama_pro: bool = field(
        default=False,
        metadata={"help": "LLaMA Pro: the model was expanded with freeze_trainable_layers new blocks, one after "
                          "every num_layers / freeze_trainable_layers; train only those blocks."},
    )
