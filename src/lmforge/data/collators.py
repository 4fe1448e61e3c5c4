"""Examples -> Batch tensors, for padded and for packed rows.

Padded rows (one sample each): right padding with the pad id; padded positions get attention_mask 0 and
label IGNORE_INDEX, so they neither attend nor count in the loss.

Packed rows (several samples each, from `packing.py`): with isolation (`neat_packing`, the sft default) the
batch carries position_ids that restart at 0 for every sample and NO attention_mask. transformers reads that
as packed sequences (masking_utils.find_packed_sequence_indices) and keeps attention inside each sample:
  - sdpa_varlen (lmforge's default, `lmforge.model.attention`): one causal SDPA call per sample, spans found
    from position_ids, no mask at all;
  - varlen_attn (`lmforge.model.varlen_attn`): on CUDA one PyTorch varlen-flash call per layer for the whole
    packed batch, cu_seqlens from the same spans;
  - flash_attention_2 / 3: varlen kernels with cu_seqlens derived from position_ids, no mask at all;
  - flex_attention: a block-sparse BlockMask built from the sample ids;
  - sdpa / eager (transformers' own): a boolean (sdpa) or additive (eager) block-diagonal causal mask of shape
    (B, 1, T, T), computed in full.
Padding at the end of a row forms its own segment with label IGNORE_INDEX, so it affects no real token.
Without isolation (`neat_packing: false`) rows attend across samples like one document.

`_token_mask` marks real (non-padding) tokens for the throughput counters and `_source` (where examples carry
it, e.g. memmap chunks) names where each row came from, for error messages; the trainer drops keys starting
with "_" before the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmforge.config.data_args import DataArguments
from lmforge.registry import Registry
from lmforge.types import IGNORE_INDEX

@dataclass(frozen=True)
class Collator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None
    isolate_packed: bool = True

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        shape = (len(features), longest)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        real = torch.zeros(shape, dtype=torch.bool)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            real[row, :n] = True
        batch = {"input_ids": input_ids, "labels": labels}
        if "sequence_lengths" in features[0] and self.isolate_packed:
            batch["position_ids"] = _restarting_positions([f["sequence_lengths"] for f in features], longest)
            batch["_token_mask"] = real
        else:
            batch["attention_mask"] = real.long()
        if "_source" in features[0]:
            batch["_source"] = [f["_source"] for f in features]
        return batch


def _restarting_positions(lengths_per_row: list[list[int]], width: int) -> torch.Tensor:
    rows = []
    for lengths in lengths_per_row:
        pad = width - sum(lengths)
        segments = [torch.arange(n) for n in lengths] + ([torch.arange(pad)] if pad else [])
        rows.append(torch.cat(segments))
    return torch.stack(rows)


# Precomputed reference log-probs (dpo/kto `precompute_ref_log_probs`) travel as extra float columns.
_REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_logps", "ref_kl_logps")


@dataclass(frozen=True)
class PairwiseCollator:
    """Pairs -> one batch of 2B rows, the B chosen rows first, then the B rejected ones, padded together.

    One forward pass then scores both responses of every pair (rm, dpo).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [{"input_ids": f[f"{side}_input_ids"], "labels": f[f"{side}_labels"]}
                for side in ("chosen", "rejected") for f in features]
        batch = Collator(self.pad_token_id, self.pad_to_multiple_of)(rows)
        return {**batch, **_reference_columns(features)}


@dataclass(frozen=True)
class FeedbackCollator:
    """KTO samples -> the sample rows, their mismatched (kl_) rows and `kto_tags`."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        pad = Collator(self.pad_token_id, self.pad_to_multiple_of)
        batch = pad([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        mismatched = pad([{"input_ids": f["kl_input_ids"], "labels": f["kl_labels"]} for f in features])
        batch.update({f"kl_{name}": value for name, value in mismatched.items()})
        batch["kto_tags"] = torch.tensor([bool(f["kto_tag"]) for f in features])
        return {**batch, **_reference_columns(features)}


@dataclass(frozen=True)
class PromptCollator:
    """Prompts to sample from (grpo, ppo) -> LEFT-padded input_ids / attention_mask, so every row's completion starts
    at the same column; the texts the rewards read (`prompt`, `answer`) travel beside them as lists."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, longest - n:] = torch.as_tensor(feature["input_ids"])
            attention_mask[row, longest - n:] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "prompt": [f["prompt"] for f in features], "answer": [f["answer"] for f in features]}


def _reference_columns(features: list[dict]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([f[name] for f in features], dtype=torch.float32)
            for name in _REFERENCE_COLUMNS if name in features[0]}


COLLATORS: Registry[Callable[[int, DataArguments], Callable]] = Registry("collator")
"""`Stage.collator` -> (pad_token_id, data_args) -> the collator of that stage's rows.

Conversation, pair and kto rows are padded to a multiple of 8 (tensor-core friendly shapes); document (pt)
rows are not: packed they are already cutoff_len long, and unpacked they have always been padded to the
longest row only (kept so pt's losses stay bit-for-bit as they were). Conversation rows honour `neat_packing`;
document rows from memmap shards always isolate when they carry per-document lengths (`isolate_documents`).
"""
COLLATORS.add("text", lambda pad_token_id, data_args: Collator(pad_token_id))
COLLATORS.add("conversation", lambda pad_token_id, data_args: Collator(
    pad_token_id, pad_to_multiple_of=8, isolate_packed=data_args.isolates_packed_samples))
COLLATORS.add("pairwise", lambda pad_token_id, data_args: PairwiseCollator(pad_token_id, pad_to_multiple_of=8))
COLLATORS.add("feedback", lambda pad_token_id, data_args: FeedbackCollator(pad_token_id, pad_to_multiple_of=8))
COLLATORS.add("prompt", lambda pad_token_id, data_args: PromptCollator(pad_token_id))
