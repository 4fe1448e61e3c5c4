"""What to train (stage) and which parameters (full, freeze, lora)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FinetuningArguments:
    stage: str = field(default="sft", metadata={"help": "Training stage: pt, sft."})
    finetuning_type: str = field(default="lora", metadata={"help": "Which parameters train: full, freeze or lora."})
    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "freeze: train the last N layers (positive) or the first N (negative)."},
    )
    freeze_trainable_modules: str = field(
        default="all",
        metadata={"help": "freeze: comma-separated module names inside the trainable layers (e.g. mlp,self_attn), or all."},
    )
    freeze_extra_modules: str | None = field(
        default=None, metadata={"help": "freeze: extra modules outside the layers to train (e.g. embed_tokens,norm)."}
    )
    lora_rank: int = field(default=8, metadata={"help": "lora: rank r of the update matrices."})
    lora_alpha: int | None = field(default=None, metadata={"help": "lora: scaling alpha (default 2 * lora_rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "lora: dropout on the adapter input."})
    lora_target: str = field(
        default="all", metadata={"help": "lora: comma-separated linear module names, or all (every linear but the head)."}
    )
    additional_target: str | None = field(
        default=None, metadata={"help": "lora: comma-separated modules trained in full beside the adapters (e.g. embed_tokens)."}
    )
    use_rslora: bool = field(default=False, metadata={"help": "lora: rank-stabilised scaling alpha / sqrt(r)."})
    use_dora: bool = field(default=False, metadata={"help": "lora: weight-decomposed LoRA (DoRA)."})
    create_new_adapter: bool = field(
        default=False, metadata={"help": "lora: start a new adapter on top of adapter_name_or_path instead of continuing it."}
    )
    loss_weighting: str = field(
        default="token",
        metadata={"help": "token: mean over all supervised tokens of the optimizer step (long samples weigh more); "
                  "sample: every sample's mean token loss weighs the same."},
    )
    loss_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per chunk of the vocabulary projection in the loss; full logits are never "
                  "materialised. Default: 1024 on accelerators, on CPU as many as keep a chunk's fp32 logits "
                  "under 32 MiB (256 to 1024). 0 = let the model compute its own loss."},
    )
    plot_loss: bool = field(default=False, metadata={"help": "Write training_loss.png / eval_loss.png to output_dir."})

    @property
    def lora_alpha_value(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank
