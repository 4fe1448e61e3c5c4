"""How the training loss is computed and normalised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LossWeighting = Literal["token", "sample"]


@dataclass(frozen=True)
class LossArguments:
    loss_weighting: LossWeighting = field(
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
