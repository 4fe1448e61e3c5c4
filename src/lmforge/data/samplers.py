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


class GroupRepeatSampler(Sampler[int]):
    """Prompt order for online RL (grpo): each index `generations` times in a row (one group of completions), each
    optimizer step's prompts `iterations` times over (its rollouts are reused for that many steps).

    Per epoch: a permutation fixed by (seed, epoch), cut into steps of `prompts_per_step` prompts (every process and
    micro-batch of one optimizer step); a tail too short for a whole step is left out (a different one each epoch).
    Yields `prompts_per_step * generations` indices per step and pass, so with a per-process micro-batch of
    B completions (a multiple of `generations`) accelerate's split over processes keeps every group on one process.
    """

    def __init__(self, size: int, *, generations: int, prompts_per_step: int, iterations: int = 1, seed: int = 42):
        if size < prompts_per_step:
            raise ValueError(f"{size} prompts are fewer than the {prompts_per_step} one optimizer step samples from")
        self.size, self.generations, self.iterations = size, generations, iterations
        self.prompts_per_step, self.seed, self.epoch = prompts_per_step, seed, 0
        self.steps = size // prompts_per_step

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        import numpy as np

        order = np.random.Generator(np.random.PCG64([self.seed, self.epoch])).permutation(self.size).tolist()
        for step in range(self.steps):
            prompts = order[step * self.prompts_per_step:(step + 1) * self.prompts_per_step]
            for _ in range(self.iterations):
                for index in prompts:
                    yield from [index] * self.generations

    def __len__(self) -> int:
        return self.steps * self.prompts_per_step * self.generations * self.iterations


class PPORolloutSampler(Sampler[int]):
    """Prompt order for ppo: per epoch a permutation fixed by (seed, epoch), cut into rollout batches of
    `prompts_per_rollout`; each batch is yielded `ppo_epochs` times, each time in its own seeded order (TRL shuffles
    the rollout batch before every PPO epoch). A tail too short for a whole rollout batch is left out.

    `plan(epoch, rollout)` gives (the batch's prompts in sampling order, the order of each PPO epoch): the trainer
    samples the whole batch once and then matches each micro-batch to its rows.
    """

    def __init__(self, size: int, *, prompts_per_rollout: int, ppo_epochs: int, seed: int = 42):
        if size < prompts_per_rollout:
            raise ValueError(f"{size} prompts are fewer than the {prompts_per_rollout} of one ppo rollout batch")
        self.size, self.prompts_per_rollout, self.ppo_epochs = size, prompts_per_rollout, ppo_epochs
        self.seed, self.epoch = seed, 0
        self.rollouts = size // prompts_per_rollout

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int, rollout: int) -> tuple[list[int], list[list[int]]]:
        import numpy as np

        order = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.size).tolist()
        prompts = order[rollout * self.prompts_per_rollout:(rollout + 1) * self.prompts_per_rollout]
        passes = []
        for ppo_epoch in range(self.ppo_epochs):
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch, rollout, ppo_epoch]))
            passes.append([prompts[i] for i in rng.permutation(len(prompts)).tolist()])
        return prompts, passes

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        for rollout in range(self.rollouts):
            for order in self.plan(epoch, rollout)[1]:
                yield from order

    def __len__(self) -> int:
        return self.rollouts * self.prompts_per_rollout * self.ppo_epochs
