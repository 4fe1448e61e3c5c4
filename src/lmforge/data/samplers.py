"""Token-budget batching: as many samples per batch as fit `max_tokens` once padded to the longest.

Each epoch the indices are shuffled with a seed derived from (seed, epoch), cut into windows, and each
window is sorted by length, so a batch holds samples of similar length and padding stays small; batches
are then shuffled so training does not see lengths in order. Deterministic for a given seed and epoch,
which keeps `resume_from_checkpoint` exact (the Trainer skips the batches already seen).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class TokenBudgetBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int], max_tokens: int, *, seed: int = 42, window: int = 4096,
                 shuffle: bool = True):
        if max(lengths, default=0) > max_tokens:
            raise ValueError(f"a sample of {max(lengths)} tokens exceeds max_tokens_per_batch={max_tokens}")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.seed = seed
        self.window = window
        self.shuffle = shuffle
        self.epoch = 0
        self._batches = self._build(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._build(epoch)

    def _build(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.window):
            window = sorted(order[start : start + self.window], key=lambda i: self.lengths[i], reverse=True)
            batch: list[int] = []
            longest = 0
            for i in window:
                new_longest = max(longest, self.lengths[i])
                if batch and new_longest * (len(batch) + 1) > self.max_tokens:
                    batches.append(batch)
                    batch, new_longest = [], self.lengths[i]
                batch.append(i)
                longest = new_longest
            if batch:
                batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)
