"""finetuning_type lora: the adapter's shape and targets (LLaMA-Factory's lora_* keys)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoraArguments:
    lora_rank: int = field(default=8, metadata={"help": "Rank r of the update matrices."})
    lora_alpha: int | None = field(default=None, metadata={"help": "Scaling alpha (default 2 * lora_rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    lora_target: str = field(
        default="all", metadata={"help": "Comma-separated linear module names, or all (every linear but the head)."}
    )
    additional_target: str | None = field(
        default=None, metadata={"help": "Comma-separated modules trained in full beside the adapters (e.g. embed_tokens)."}
    )
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r)."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    loraplus_lr_ratio: float | None = field(
        default=None,
        metadata={"help": "LoRA+: the B matrices (and 1-D params) learn at this ratio times the learning rate, "
                          "the A matrices at the learning rate itself (16 in the LoRA+ paper)."},
    )
    loraplus_lr_embedding: float = field(
        default=1e-6, metadata={"help": "LoRA+: learning rate of the B matrices of LoRA on embedding layers."}
    )
    pissa_init: bool = field(
        default=False,
        metadata={"help": "PiSSA: start A and B from the top singular vectors of each weight and train against "
                          "the residual; the model at step 0 computes what the base computed."},
    )
    pissa_iter: int = field(
        default=16, metadata={"help": "PiSSA: fast-SVD iterations (randomised SVD); -1 runs the exact SVD."}
    )
    pissa_convert: bool = field(
        default=False,
        metadata={"help": "PiSSA: also save the trained adapter as a plain LoRA adapter for the original base "
                          "(output_dir/pissa_converted; pissa_init holds the initial adapter)."},
    )
    create_new_adapter: bool = field(
        default=False, metadata={"help": "Start a new adapter on top of adapter_name_or_path instead of continuing it."}
    )

    @property
    def lora_alpha_value(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank
