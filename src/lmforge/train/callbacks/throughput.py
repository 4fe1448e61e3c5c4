"""Tokens per second and MFU, counted honestly: real (non-pad) tokens, supervised tokens, warm-up skipped.

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
* ``throughput/tflops_per_device``: model FLOPs per second (in TFLOP/s) achieved per device, from the
  real and supervised token counts and each sample's real length (`lmforge.arith.flops` has the
  convention: PaLM's 6N + 12·L·d_q·T, backward only where something trains, lm_head on supervised tokens).
* ``throughput/mfu``: that over the device's peak FLOP/s (a fraction, 0..1), averaged over devices. The
  peak is `peak_tflops` (config key or argument), else the datasheet table `flops.PEAK_TFLOPS` for the GPU
  and the training dtype, else (`mfu_calibration: true`, the default) a ~0.5 s square-matmul calibration
  at train start, e.g. on CPUs. The FLOPs/token formula and the peak with its source are logged once at
  train start.
* ``throughput/tokens_total``, ``throughput/supervised_tokens_total``: running totals of the run
  (warm-up steps included). On resume they continue from the last logged totals in the checkpoint's
  log history, so tokens trained between that log and the checkpoint are missed unless `save_steps` is
  a multiple of `logging_steps`.

Time is wall clock from optimizer step to optimizer step, including data loading but excluding the time
spent in evaluation, checkpoint saving and logging; the first `warmup_steps` optimizer steps of each
(re)started session are left out of the rates (compilation, allocator warm-up, first dataloader fill).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import torch
from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from lmforge.errors import ConfigError
from lmforge.logging import get_logger
from lmforge.arith.flops import ModelFlops
from lmforge.model.flops import model_flops
from lmforge.train.peak_flops import peak_flops
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
TFLOPS_PER_DEVICE = PREFIX + "tflops_per_device"
MFU = PREFIX + "mfu"

# Slots of the count vector kept per window: [real tokens, supervised tokens, batch positions, Σ len²,
# then Σ len·min(len, w) for each sliding window w of the model].
_TOKENS, _SUPERVISED, _POSITIONS, _LEN_SQ = 0, 1, 2, 3
_COUNTS = 3  # slots of count_batch_tokens


def _real_token_mask(inputs: Mapping[str, torch.Tensor], input_ids: torch.Tensor) -> torch.Tensor | None:
    """Boolean mask of real (non-padding) positions, or None when every position is a token.

    `_token_mask` (set by collators that send no attention_mask, e.g. isolated packing) wins over
    attention_mask. `!= 0`, not the mask itself: packed ("neat packing") batches store a sequence index
    1, 2, 3, ... per token in attention_mask, with 0 only for padding.
    """
    token_mask = inputs.get("_token_mask")
    if isinstance(token_mask, torch.Tensor) and token_mask.shape == input_ids.shape:
        return token_mask.bool()
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape == input_ids.shape:
        return mask != 0
    return None  # padding-free packing (flattened rows + position_ids) or a 4-D mask


def count_batch_tokens(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Count one micro-batch: ``[real tokens, supervised tokens, positions]`` as a long tensor.

    The result stays on the batch's device so that counting never forces a host-device sync; it is
    read once per logging interval.

    Args:
        inputs: The batch as the model receives it (``input_ids``, optional ``attention_mask``,
            ``labels`` or ``shift_labels``), plus the optional private ``_token_mask`` (True = real token).

    Returns:
        The three counts, or None when the batch has no ``input_ids`` (nothing this callback can count).
    """
    input_ids = inputs.get("input_ids")
    if not isinstance(input_ids, torch.Tensor):
        return None
    # torch.full, not torch.tensor: a fill kernel on the device, where a host-to-device copy of a Python
    # int from pageable memory would wait for the GPU stream to drain on every micro-batch.
    positions = torch.full((), input_ids.numel(), dtype=torch.long, device=input_ids.device)
    real = _real_token_mask(inputs, input_ids)
    tokens = real.sum() if real is not None else positions.clone()
    shifted = inputs.get("shift_labels")
    if isinstance(shifted, torch.Tensor):
        supervised = (shifted != IGNORE_INDEX).sum()
    elif isinstance(inputs.get("labels"), torch.Tensor):
        # Label at position 0 is never a prediction target after the causal shift.
        supervised = (inputs["labels"][..., 1:] != IGNORE_INDEX).sum()
    else:
        supervised = torch.zeros((), dtype=torch.long, device=input_ids.device)
    return torch.stack([tokens.long(), supervised.long(), positions.long()])


def attention_length_sums(inputs: Mapping[str, torch.Tensor], windows: tuple[int, ...] = ()) -> torch.Tensor | None:
    """Σ len² and Σ len·min(len, w) for each window w over the samples of one micro-batch, on its device.

    Attention costs each token FLOPs in proportion to the length of its own sample, so a batch's attention
    FLOPs scale with Σ len² (its effective length per token is Σlen²/Σlen). A sample is a row, cut further
    where attention_mask changes value (neat packing's 1, 2, 3 sample ids; padding) or, with no
    attention_mask, where position_ids restart at 0 (packed rows that transformers isolates per sample).
    Lengths count real tokens only, so a padding segment has length 0. Computed with fixed-size tensor ops
    (a scatter into one slot per position), so no host-device sync.

    Returns:
        A long tensor of 1 + len(windows) sums, or None when the batch has no 2-D ``input_ids``.
    """
    input_ids = inputs.get("input_ids")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        return None
    real = _real_token_mask(inputs, input_ids)
    if real is None:
        real = torch.ones_like(input_ids, dtype=torch.bool)
    starts = torch.zeros_like(real)
    starts[:, 0] = True
    mask = inputs.get("attention_mask")
    positions = inputs.get("position_ids")
    if isinstance(mask, torch.Tensor) and mask.shape == input_ids.shape:
        # With a 2-D mask transformers ignores restarting position_ids: the mask alone says who attends.
        starts[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    elif isinstance(positions, torch.Tensor) and positions.dim() == 2 and positions.shape[-1] == input_ids.shape[1]:
        starts |= positions.expand_as(input_ids) == 0
    segment = starts.reshape(-1).cumsum(0) - 1
    lengths = torch.zeros(real.numel(), dtype=torch.long, device=real.device)
    lengths.scatter_add_(0, segment, real.reshape(-1).long())
    sums = [(lengths * lengths).sum()] + [(lengths * lengths.clamp(max=w)).sum() for w in windows]
    return torch.stack(sums)


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
    """Adds tokens/s, supervised tokens/s, padding fraction, TFLOP/s and MFU to each training log.

    Args:
        warmup_steps: Optimizer steps at the start of each training session left out of the rates.
        clock: Seconds as a float; injectable for tests.
        peak_tflops: Peak dense TFLOP/s of one device in the training dtype. None: the `peak_tflops` of the
            TrainingArguments, else the datasheet table (GPUs), else a calibration (see `calibrate_peak`).
        calibrate_peak: Time a short matmul at train start when no peak is known. None: the arguments'
            `mfu_calibration` (default True).
        flops: The model's FLOP shapes; None: from the model passed to `on_train_begin` (its config and
            which of its weights train). Injectable for tests.
    """

    def __init__(
        self,
        warmup_steps: int = 1,
        clock: Callable[[], float] = time.perf_counter,
        *,
        peak_tflops: float | None = None,
        calibrate_peak: bool | None = None,
        flops: ModelFlops | None = None,
    ):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        _check_peak(peak_tflops)
        self.warmup_steps = warmup_steps
        self._clock_fn = clock
        self._peak_tflops = peak_tflops
        self._calibrate_peak = calibrate_peak
        self._flops_given = flops
        self.flops: ModelFlops | None = flops  # resolved in on_train_begin
        self.peak_flops: float | None = None  # FLOP/s of one device; None: no MFU
        self._windows: tuple[int, ...] = flops.distinct_windows if flops is not None else ()
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
        lengths = attention_length_sums(inputs, self._windows) if counts is not None else None
        if counts is None or lengths is None:
            if not self._warned_uncountable:
                logger.warning("throughput: batch without input_ids (keys %s); not counted", sorted(inputs))
                self._warned_uncountable = True
            return
        self._batches += 1
        counts = torch.cat([counts, lengths])
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
        if self.peak_flops is None or self.flops is None:  # once per callback: calibration takes ~1 s
            self._setup_mfu(args, state, kwargs.get("model"))

    def _setup_mfu(self, args: TrainingArguments, state: TrainerState, model) -> None:
        """Resolve the model's FLOP shapes and the device peak; log both once."""
        if self.flops is None and model is not None:
            try:
                self.flops = model_flops(model=model)
            except (ValueError, AttributeError) as err:
                logger.warning("throughput: no FLOPs/token for this model (%s); no MFU", err)
        if self.flops is None:
            return
        self._windows = self.flops.distinct_windows
        device, dtype = _training_device_and_dtype(args, model)
        peak_tflops = self._peak_tflops if self._peak_tflops is not None else getattr(args, "peak_tflops", None)
        _check_peak(peak_tflops)
        calibrate = self._calibrate_peak
        if calibrate is None:
            calibrate = getattr(args, "mfu_calibration", True)
        self.peak_flops, source = peak_flops(device, dtype, peak_tflops=peak_tflops, calibrate=calibrate)
        if state.is_world_process_zero:
            logger.info(
                "throughput: model FLOPs/token = %.4g + %.4g·T per token (+ %.4g per supervised token for the "
                "lm_head), T = each sample's length; %s",
                *_formula_terms(self.flops),
                self.flops.describe(),
            )
            peak = f"{self.peak_flops / 1e12:.4g} TFLOP/s per device" if self.peak_flops else "none (no MFU)"
            logger.info("throughput: peak %s (%s)", peak, source)

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
        zeros = torch.zeros(_LEN_SQ + 1 + len(self._windows), dtype=torch.long)
        window = self._window if self._window is not None else zeros
        total = self._total if self._total is not None else zeros
        # One collective carries both windows; this `.tolist()` is the callback's only sync point.
        sums, world = _sum_over_ranks(torch.cat([window.to(total.device), total]))
        win, tot = sums[: len(zeros)], sums[len(zeros) :]
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
                if self.flops is not None:
                    out.update(self._flops_rates(win, world))
            self._window = None
            self._busy_s = 0.0
        return out


    def _flops_rates(self, win: list[int], world: int) -> dict[str, float]:
        """TFLOP/s per device and MFU of the window's counts (summed over ranks)."""
        length_sums: dict[int | None, float] = {None: win[_LEN_SQ]}
        length_sums.update(zip(self._windows, win[_LEN_SQ + 1 :], strict=True))
        flops = self.flops.training_flops(win[_TOKENS], win[_SUPERVISED], length_sums)
        per_device = flops / self._busy_s / world
        out = {TFLOPS_PER_DEVICE: float(f"{per_device / 1e12:.4g}")}
        if self.peak_flops:
            out[MFU] = float(f"{per_device / self.peak_flops:.4g}")
        return out


def _check_peak(peak_tflops: float | None) -> None:
    if peak_tflops is not None and not (peak_tflops > 0 and math.isfinite(peak_tflops)):
        raise ConfigError(f"peak_tflops must be a positive number of TFLOP/s per device, got {peak_tflops}")


def _training_device_and_dtype(args: TrainingArguments, model) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the training matmuls run: autocast's dtype, else the weights' dtype."""
    param = next(model.parameters(), None) if model is not None else None
    device = param.device if param is not None else args.device
    if getattr(args, "bf16", False):
        return device, torch.bfloat16
    if getattr(args, "fp16", False):
        return device, torch.float16
    dtype = param.dtype if param is not None and param.dtype in (torch.bfloat16, torch.float16) else torch.float32
    return device, dtype


def _formula_terms(flops: ModelFlops) -> tuple[float, float, float]:
    """(per token without attention, attention per token per unit of sample length, lm_head per supervised)."""
    base = flops.training_flops(1, 0, {w: 0 for w in (None, *flops.distinct_windows)})
    attention = flops.training_flops(0, 0, {w: 1 for w in (None, *flops.distinct_windows)})
    head = flops.training_flops(0, 1, {w: 0 for w in (None, *flops.distinct_windows)})
    return base, attention, head


def _totals_from_history(log_history: list[dict]) -> tuple[int, int]:
    """The running totals of the last log before a resume (0, 0 on a fresh run)."""
    for entry in reversed(log_history):
        if TOKENS_TOTAL in entry:
            return int(entry[TOKENS_TOTAL]), int(entry.get(SUPERVISED_TOTAL, 0))
    return 0, 0
