"""Tokens per second, counted honestly: real (non-pad) tokens and supervised tokens, warm-up skipped.

Usage::

    throughput = ThroughputCallback(warmup_steps=1)
    trainer = BaseTrainer(..., callbacks=[throughput, LogWriterCallback(out)],
                          batch_observers=[throughput.observe_batch])

Why a batch hook and not a wrapped data collator: the collator runs inside DataLoader worker processes
(`dataloader_num_workers > 0`) and ahead of the step that consumes its batch (prefetching), so counts
taken there never reach the main process and would land in the wrong interval. The trainer instead calls
`observe_batch(inputs)` once per micro-batch at the top of `training_step` (one line, already in
`BaseTrainer.training_step`), i.e. exactly for the batches that are trained on, in the process that
trains on them.

Keys added to each training log (`logs` is mutated in `on_log`, so every callback *after* this one in
the callback list sees them; keep it before `LogWriterCallback`):

* ``throughput/tokens_per_s`` and ``..._per_device``: non-pad tokens per wall-clock second, summed over
  ranks / averaged per rank.
* ``throughput/supervised_tokens_per_s`` and ``..._per_device``: tokens that carry a loss, i.e.
  ``labels[..., 1:] != -100`` (the first label can never be predicted: causal LMs shift labels left).
* ``throughput/padding_fraction``: share of batch positions that were padding in the interval.
* ``throughput/tokens_total``, ``throughput/supervised_tokens_total``: running totals of the run
  (warm-up steps included). On resume they continue from the last logged totals in the checkpoint's
  log history, so tokens trained between that log and the checkpoint are missed unless `save_steps` is
  a multiple of `logging_steps`.

Time is wall clock from optimizer step to optimizer step, including data loading but excluding the time
spent in evaluation, checkpoint saving and logging; the first `warmup_steps` optimizer steps of each
(re)started session are left out of the rates (compilation, allocator warm-up, first dataloader fill).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.logging import get_logger
from lmforge.types import IGNORE_INDEX

logger = get_logger(__name__)

PREFIX = "throughput/"
TOKENS_PER_S = PREFIX + "tokens_per_s"
TOKENS_PER_S_PER_DEVICE = PREFIX + "tokens_per_s_per_device"
SUPERVISED_PER_S = PREFIX + "supervised_tokens_per_s"
SUPERVISED_PER_S_PER_DEVICE = PREFIX + "supervised_tokens_per_s_per_device"
PADDING_FRACTION = PREFIX + "padding_fraction"
TOKENS_TOTAL = PREFIX + "tokens_total"
SUPERVISED_TOTAL = PREFIX + "supervised_tokens_total"

# Slots of the count vector kept per window: [real tokens, supervised tokens, batch positions].
_TOKENS, _SUPERVISED, _POSITIONS = 0, 1, 2


def count_batch_tokens(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Count one micro-batch: ``[real tokens, supervised tokens, positions]`` as a long tensor.

    The result stays on the batch's device so that counting never forces a host-device sync; it is
    read once per logging interval.

    Args:
        inputs: The batch as the model receives it (``input_ids``, optional ``attention_mask``,
            ``labels`` or ``shift_labels``).

    Returns:
        The three counts, or None when the batch has no ``input_ids`` (nothing this callback can count).
    """
    input_ids = inputs.get("input_ids")
    if not isinstance(input_ids, torch.Tensor):
        return None
    # torch.full, not torch.tensor: a fill kernel on the device, where a host-to-device copy of a Python
    # int from pageable memory would wait for the GPU stream to drain on every micro-batch.
    positions = torch.full((), input_ids.numel(), dtype=torch.long, device=input_ids.device)
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape == input_ids.shape:
        # `!= 0`, not `.sum()`: packed ("neat packing") batches store a sequence index 1, 2, 3, ... per
        # token in attention_mask, with 0 only for padding; summing would count a token of sequence 3 thrice.
        tokens = (mask != 0).sum()
    else:
        # Padding-free packing (flattened rows + position_ids) or a 4-D mask: every position is a token.
        tokens = positions.clone()
    shifted = inputs.get("shift_labels")
    if isinstance(shifted, torch.Tensor):
        supervised = (shifted != IGNORE_INDEX).sum()
    elif isinstance(inputs.get("labels"), torch.Tensor):
        # Label at position 0 is never a prediction target after the causal shift.
        supervised = (inputs["labels"][..., 1:] != IGNORE_INDEX).sum()
    else:
        supervised = torch.zeros((), dtype=torch.long, device=input_ids.device)
    return torch.stack([tokens.long(), supervised.long(), positions.long()])


def _sum_over_ranks(counts: torch.Tensor) -> tuple[list[int], int]:
    """All-reduce (sum) the counts over ranks when torch.distributed is up; returns (sums, world size).

    Exact sums rather than "rank 0 times world size": with packing or length grouping, ranks see
    different numbers of real tokens. Every rank reaches this from the same `on_log` call, so the
    collective cannot deadlock.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return counts.tolist(), 1
    device = torch.device("cpu")
    if torch.distributed.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    counts = counts.to(device)
    torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.SUM)
    return counts.tolist(), torch.distributed.get_world_size()


def _is_training_log(logs: Mapping[str, float]) -> bool:
    """A per-interval training log (has `loss`), as opposed to eval metrics or the end-of-run summary."""
    return "loss" in logs and not any(key.startswith("eval_") for key in logs)


def move_to_front(callback_handler, callback: TrainerCallback) -> None:
    """Run `callback` before every other callback, so that experiment trackers see its keys too.

    transformers puts its own callbacks (including `report_to` integrations such as TensorBoard) before
    user callbacks, and `on_log` hooks run in list order; call this after building the trainer when
    `report_to` is not `none`: ``move_to_front(trainer.callback_handler, throughput)``.
    """
    callback_handler.callbacks.remove(callback)
    callback_handler.callbacks.insert(0, callback)


class ThroughputCallback(TrainerCallback):
    """Adds tokens/s, supervised tokens/s and padding fraction to each training log.

    Args:
        warmup_steps: Optimizer steps at the start of each training session left out of the rates.
        clock: Seconds as a float; injectable for tests.
    """

    def __init__(self, warmup_steps: int = 1, clock: Callable[[], float] = time.perf_counter):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self._clock_fn = clock
        self._window: torch.Tensor | None = None  # counts since the last training log / timing start
        self._total: torch.Tensor | None = None  # counts since this session began
        self._base_tokens = 0  # totals carried over from before a resume
        self._base_supervised = 0
        self._busy_s = 0.0  # timed seconds in the current window
        self._clock: float | None = None  # None until warm-up is over
        self._steps = 0
        self._batches = 0
        self._warned_uncountable = False

    # -- the batch hook -------------------------------------------------------------------------------

    def observe_batch(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Count one training micro-batch; call it from `Trainer.training_step` before the forward."""
        counts = count_batch_tokens(inputs)
        if counts is None:
            if not self._warned_uncountable:
                logger.warning("throughput: batch without input_ids (keys %s); not counted", sorted(inputs))
                self._warned_uncountable = True
            return
        self._batches += 1
        # Tensor adds on the batch's device are queued asynchronously: no sync per micro-batch.
        self._window = counts if self._window is None else self._window + counts
        self._total = counts if self._total is None else self._total + counts

    # -- timing ---------------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._steps = 0
        self._window = self._total = None
        self._busy_s = 0.0
        self._clock = self._clock_fn() if self.warmup_steps == 0 else None
        self._base_tokens, self._base_supervised = _totals_from_history(state.log_history)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._steps += 1
        now = self._clock_fn()
        if self._clock is not None:
            self._busy_s += now - self._clock
            self._clock = now
        elif self._steps >= self.warmup_steps:
            # Warm-up over: start timing here and drop the warm-up batches from the rate window.
            self._clock = now
            self._window = None
            self._busy_s = 0.0

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._skip_elapsed()

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._skip_elapsed()

    def _skip_elapsed(self) -> None:
        """Restart the clock so evaluation / checkpoint time is not charged to training."""
        if self._clock is not None:
            self._clock = self._clock_fn()

    # -- reporting ------------------------------------------------------------------------------------

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if logs is None:
            return
        training = _is_training_log(logs)
        if not training and "train_runtime" not in logs:
            self._skip_elapsed()  # eval metrics: the time since the last step was spent evaluating
            return
        if self._batches == 0:
            if training and not self._warned_uncountable:
                logger.warning("throughput: no batches observed; is observe_batch hooked into training_step?")
                self._warned_uncountable = True
            return
        if training and self._clock is not None:
            # Includes the host-device sync the Trainer just did to read the loss, so queued GPU work of
            # the interval is paid for inside the interval.
            now = self._clock_fn()
            self._busy_s += now - self._clock
            self._clock = now
        added = self._report(training)
        logs.update(added)
        # Trainer.log appended a copy of `logs` to log_history before calling us; mirror the keys there
        # so trainer_state.json keeps them and a resumed run can continue the running totals.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(added)

    def _report(self, training: bool) -> dict[str, float]:
        zeros = torch.zeros(3, dtype=torch.long)
        window = self._window if self._window is not None else zeros
        total = self._total if self._total is not None else zeros
        # One collective carries both windows; this `.tolist()` is the callback's only sync point.
        sums, world = _sum_over_ranks(torch.cat([window.to(total.device), total]))
        win, tot = sums[:3], sums[3:]
        out: dict[str, float] = {
            TOKENS_TOTAL: self._base_tokens + tot[_TOKENS],
            SUPERVISED_TOTAL: self._base_supervised + tot[_SUPERVISED],
        }
        if training:
            if win[_POSITIONS] > 0:
                out[PADDING_FRACTION] = round(1.0 - win[_TOKENS] / win[_POSITIONS], 4)
            if self._clock is not None and self._busy_s > 0 and win[_POSITIONS] > 0:
                out[TOKENS_PER_S] = round(win[_TOKENS] / self._busy_s, 2)
                out[TOKENS_PER_S_PER_DEVICE] = round(win[_TOKENS] / self._busy_s / world, 2)
                out[SUPERVISED_PER_S] = round(win[_SUPERVISED] / self._busy_s, 2)
                out[SUPERVISED_PER_S_PER_DEVICE] = round(win[_SUPERVISED] / self._busy_s / world, 2)
            self._window = None
            self._busy_s = 0.0
        return out


def _totals_from_history(log_history: list[dict]) -> tuple[int, int]:
    """The running totals of the last log before a resume (0, 0 on a fresh run)."""
    for entry in reversed(log_history):
        if TOKENS_TOTAL in entry:
            return int(entry[TOKENS_TOTAL]), int(entry.get(SUPERVISED_TOTAL, 0))
    return 0, 0
