"""Examples -> padded Batch tensors.

Padding goes on the right with the tokenizer's pad id; padded positions get attention_mask 0 and label
IGNORE_INDEX, so they neither attend nor count in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.types import IGNORE_INDEX


@dataclass(frozen=True)
class PaddingCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.full((len(features), longest), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(features), longest), dtype=torch.long),
            "labels": torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long),
        }
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            batch["input_ids"][row, :n] = torch.as_tensor(feature["input_ids"])
            batch["attention_mask"][row, :n] = torch.as_tensor(feature["attention_mask"])
            batch["labels"][row, :n] = torch.as_tensor(feature["labels"])
        return batch
