"""What a training run prints: a progress bar with ETA, and each log event as one aligned line with units.

Usage::

    trainer = BaseTrainer(..., callbacks=[throughput, LogWriterCallback(out)])
    use_console(trainer)  # replaces transformers' ProgressCallback / PrinterCallback

A run then prints, above its bar (``train:  35%|███▌      | 245/704 [01:12<02:14, 3.38step/s]``), one line
per log (the training lines are shown wrapped here)::

    step    20/198  loss 4.7662  lr 1.99e-03  grad_norm 1.57   ppl 117.5    clipped 100%  epoch 0.61
                    4,122 tok/s  mfu 14.2%  eta 1m31s
    step    40/198  loss 1.5662  lr 1.88e-03  grad_norm 0.369  ppl 4.789    clipped  25%  epoch 1.21
                    3,385 tok/s  mfu 11.6%  eta 1m27s
    step    50/704  eval_loss 1.1113  eval_ppl 3.038  0.13 s  1,529 samples/s
    done   198/198  in 59s  train_loss 1.5903  53.2 samples/s  3.36 steps/s  401,346 tokens  398,208 supervised

Why our own callback: transformers prints each log as a Python dict of quoted strings
(``{'loss': '6.618', 'grad_norm': ...}``), one per line and ~600 characters wide with the throughput keys.
Only the console changes: ``trainer_log.jsonl`` (`LogWriterCallback`) and the trackers see the same `logs`.

Lines go through the ``lmforge.console`` logger, which writes them with `tqdm.write` so they land above the
bar; its level follows the ``lmforge`` logger (INFO on rank 0, WARNING elsewhere), so raising that level
(as `lmforge demo` does) keeps the bar and drops the lines. ``disable_tqdm: true`` drops the bar and keeps the
lines. Only the main process (global rank 0) prints either.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping

from transformers import (
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from lmforge.logging import get_logger
from lmforge.train.callbacks.throughput import MFU, PREFIX, SUPERVISED_TOTAL, TOKENS_PER_S, TOKENS_TOTAL

CONSOLE_LOGGER = "lmforge.console"

# Keys that have their own column (or are noise on a console: the other throughput/* keys, total_flos).
_TRAIN_COLUMNS = frozenset({"loss", "learning_rate", "grad_norm", "perplexity", "grad_clip_rate", "epoch"})
_EVAL_COLUMNS = frozenset({"eval_loss", "eval_perplexity", "eval_runtime", "eval_samples_per_second",
                           "eval_steps_per_second", "epoch"})
_SUMMARY_COLUMNS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
                              "epoch", "total_flos"})


class _TqdmHandler(logging.Handler):
    """Writes to the current `sys.stderr` through `tqdm.write`, which lifts an open bar over the line."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # the logging module's contract: a handler never raises into the caller
            self.handleError(record)


def console_logger() -> logging.Logger:
    """The logger of the console lines: plain text (no ``[lmforge INFO]`` prefix), under the bar's control."""
    get_logger(__name__)  # sets up the "lmforge" logger whose level this one inherits
    logger = logging.getLogger(CONSOLE_LOGGER)
    if not logger.handlers:
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # else the "lmforge" handler prints each line a second time, prefixed
    return logger


def duration(seconds: float) -> str:
    """``45s``, ``1m12s``, ``2h03m``: what an ETA or a runtime needs, nothing finer."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _extras(logs: Mapping, shown: frozenset[str]) -> list[str]:
    """Every other numeric key as ``name value`` (stage metrics such as dpo's rewards/margins)."""
    return [f"{key} {_number(value)}" for key, value in logs.items()
            if key not in shown and not key.startswith(PREFIX) and isinstance(value, (int, float))]


def format_train_line(logs: Mapping, step: int, total: int, eta_s: float | None) -> str:
    """One training log as an aligned line: fixed-width numbers, units where a number has one."""
    parts = [_step(step, total)]
    if "loss" in logs:
        parts.append(f"loss {logs['loss']:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if "grad_norm" in logs:
        parts.append(f"grad_norm {logs['grad_norm']:<5.3g}")
    if "perplexity" in logs:
        parts.append(f"ppl {logs['perplexity']:<7.4g}")
    if "grad_clip_rate" in logs:  # share of the interval's optimizer steps whose gradient was clipped
        parts.append(f"clipped {logs['grad_clip_rate']:>4.0%}")
    parts.extend(_extras(logs, _TRAIN_COLUMNS))
    if "epoch" in logs:
        parts.append(f"epoch {logs['epoch']:.2f}")
    if TOKENS_PER_S in logs:
        parts.append(f"{logs[TOKENS_PER_S]:>9,.0f} tok/s")
    if MFU in logs:
        parts.append(f"mfu {logs[MFU]:>5.1%}")
    if eta_s is not None:
        parts.append(f"eta {duration(eta_s)}")
    return "  ".join(parts)


def format_eval_line(logs: Mapping, step: int, total: int) -> str:
    parts = [_step(step, total)] if total else ["eval"]
    if "eval_loss" in logs:
        parts.append(f"eval_loss {logs['eval_loss']:.4f}")
    if "eval_perplexity" in logs:
        parts.append(f"eval_ppl {logs['eval_perplexity']:.4g}")
    parts.extend(_extras(logs, _EVAL_COLUMNS))
    if "eval_runtime" in logs:
        parts.append(f"{logs['eval_runtime']:.2f} s")
    if "eval_samples_per_second" in logs:
        parts.append(f"{logs['eval_samples_per_second']:,.0f} samples/s")
    return "  ".join(parts)


def format_summary_line(logs: Mapping, step: int, total: int) -> str:
    """The end-of-run summary transformers logs (`train_runtime`, ...)."""
    parts = [f"done {step:>{len(str(total)) + 2}}/{total}"]
    if "train_runtime" in logs:
        parts.append(f"in {duration(logs['train_runtime'])}")
    if "train_loss" in logs:
        parts.append(f"train_loss {logs['train_loss']:.4f}")
    parts.extend(_extras(logs, _SUMMARY_COLUMNS))
    if "train_samples_per_second" in logs:
        parts.append(f"{logs['train_samples_per_second']:,.1f} samples/s")
    if "train_steps_per_second" in logs:
        parts.append(f"{logs['train_steps_per_second']:,.2f} steps/s")
    if TOKENS_TOTAL in logs:
        parts.append(f"{logs[TOKENS_TOTAL]:,} tokens")
    if SUPERVISED_TOTAL in logs:
        parts.append(f"{logs[SUPERVISED_TOTAL]:,} supervised")
    return "  ".join(parts)


def _step(step: int, total: int) -> str:
    return f"step {step:>{len(str(total)) + 2}}/{total}"


class ConsoleCallback(TrainerCallback):
    """A tqdm bar for training (and one for each evaluation), with each log printed above it as a line.

    Args:
        clock: seconds as a float, for the ETA; injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._logger = console_logger()
        self.training_bar = None
        self.eval_bar = None
        self._start: float | None = None
        self._start_step = 0

    # --- bars ------------------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._start, self._start_step = self._clock(), state.global_step
        if state.is_world_process_zero and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                                     dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.training_bar.n)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero or args.disable_tqdm:
            return
        if self.eval_bar is None:
            try:
                total = len(eval_dataloader)
            except TypeError:  # an iterable dataset: no length, no bar
                return
            from tqdm.auto import tqdm

            self.eval_bar = tqdm(total=total, desc="eval", unit="batch", leave=self.training_bar is None,
                                 dynamic_ncols=True, file=sys.stderr)
        self.eval_bar.update(1)

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_eval_bar()

    def on_predict(self, args, state, control, **kwargs):
        self._close_eval_bar()

    def _close_eval_bar(self) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None

    # --- lines -----------------------------------------------------------------------------------------

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        self._logger.info(self.format(logs, state.global_step, state.max_steps))

    def format(self, logs: Mapping, step: int, total: int) -> str:
        if "train_runtime" in logs:
            return format_summary_line(logs, step, total)
        if any(key.startswith("eval_") for key in logs):
            return format_eval_line(logs, step, total)
        return format_train_line(logs, step, total, self._eta(step, total))

    def _eta(self, step: int, total: int) -> float | None:
        done = step - self._start_step
        if self._start is None or done <= 0 or total <= 0:
            return None
        return (total - step) * (self._clock() - self._start) / done


def use_console(trainer) -> ConsoleCallback:
    """Put a `ConsoleCallback` in place of transformers' ProgressCallback / PrinterCallback.

    Added last, like the callback it replaces, so the `logs` it formats already carry every key the other
    callbacks add (throughput); it never changes `logs`.
    """
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    console = ConsoleCallback()
    trainer.add_callback(console)
    return console
