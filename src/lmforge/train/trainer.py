"""BaseTrainer: transformers.Trainer plus the hooks lmforge's metrics need.

Loss normalisation is left to transformers: with a model that accepts `num_items_in_batch` (every HF
causal LM does), the Trainer sums the token losses and divides by the supervised tokens of the whole
optimizer step, across gradient-accumulation micro-batches and ranks — the rule of DESIGN.md §7.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import Trainer


class BaseTrainer(Trainer):
    """A Trainer that shows each training batch to observers (throughput counting) before the step."""

    def __init__(self, *args, batch_observers: list[Callable[[dict], None]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_observers = list(batch_observers or [])

    def training_step(self, model, inputs, num_items_in_batch=None):
        for observe in self.batch_observers:
            observe(inputs)
        return super().training_step(model, inputs, num_items_in_batch)
