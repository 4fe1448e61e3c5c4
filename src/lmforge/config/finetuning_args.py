"""What to train (stage) and which parameters (full, freeze, lora); each method's keys have their own group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinetuningType = Literal["full", "freeze", "lora"]


@dataclass(frozen=True)
class FinetuningArguments:
    stage: str = field(default="sft", metadata={"help": "Training stage, a name in the stage registry (lmforge.stages)."})
    finetuning_type: FinetuningType = field(default="lora", metadata={"help": "Which parameters train: full, freeze or lora."})
    pure_bf16: bool = field(
        default=False,
        metadata={"help": "Weights, gradients and optimizer updates all in bf16, no fp32 master copy (LLaMA-Factory's "
                  "pure_bf16; what GaLore / APOLLO examples use). Halves weight memory; small updates can round away."},
    )
    plot_loss: bool = field(
        default=False,
        metadata={"help": "Write training_loss.png / eval_loss.png (and the reward accuracy of rm, dpo and kto) "
                  "to output_dir."},
    )
    ema_decay: float | None = field(
        default=None,
        metadata={"help": "Keep an exponential moving average of the trained weights, updated after every optimizer "
                  "step with this decay (e.g. 0.999), saved in each checkpoint and as a model in output_dir/ema."},
    )
