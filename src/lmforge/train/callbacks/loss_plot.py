"""Keep `training_loss.png` and `eval_loss.png` in the output directory up to date while training runs.

Usage::

    trainer = BaseTrainer(..., callbacks=[..., LossPlotCallback(output_dir, every_n_logs=10)])
    # or after the fact, from a finished or crashed run's log:
    plot_loss_rows(read_log("out/trainer_log.jsonl"), "out")

The curves come from `TrainerState.log_history`, which transformers restores from the checkpoint on
resume, so a resumed run plots its whole history without reading files or keeping a copy. The training
plot is redrawn every `every_n_logs` training logs and at the end of training, the eval plot after every
evaluation (including a `trainer.evaluate()` after `train()`), so a crashed run still leaves a recent
plot behind. Only the main process draws.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.logging import get_logger
from lmforge.train.plotting import plot_curve

logger = get_logger(__name__)

TRAIN_PLOT = "training_loss.png"
EVAL_PLOT = "eval_loss.png"


def _series(rows: Iterable[Mapping], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for row in rows:
        if key in row and row[key] is not None:
            steps.append(row.get("step", len(steps)))
            values.append(row[key])
    return steps, values


def plot_training_loss(rows: Iterable[Mapping], output_dir: str | os.PathLike) -> Path | None:
    """Draw ``output_dir/training_loss.png`` from rows with ``step`` and ``loss``; None if there are none."""
    steps, values = _series(rows, "loss")
    if not values:
        return None
    return plot_curve(steps, values, "training loss", "loss", Path(output_dir) / TRAIN_PLOT)


def plot_eval_loss(rows: Iterable[Mapping], output_dir: str | os.PathLike) -> Path | None:
    """Draw ``output_dir/eval_loss.png`` from rows with ``step`` and ``eval_loss``; None if there are none."""
    steps, values = _series(rows, "eval_loss")
    if not values:
        return None
    return plot_curve(steps, values, "evaluation loss", "eval loss", Path(output_dir) / EVAL_PLOT)


def metric_plot_name(key: str) -> str:
    """`rewards/accuracies` -> `training_rewards_accuracies.png`; `eval_accuracy` -> `eval_accuracy.png`."""
    name = key.replace("/", "_")
    return f"{name}.png" if name.startswith("eval_") else f"training_{name}.png"


def plot_metrics(rows: Iterable[Mapping], keys: Iterable[str], output_dir: str | os.PathLike) -> list[Path]:
    """One plot per logged metric in `keys` (and its eval_ twin), for the keys that were logged."""
    rows = list(rows)
    paths = []
    for key in keys:
        for logged in (key, f"eval_{key}"):
            steps, values = _series(rows, logged)
            if values:
                paths.append(plot_curve(steps, values, logged, logged, Path(output_dir) / metric_plot_name(logged)))
    return paths


def plot_loss_rows(rows: Iterable[Mapping], output_dir: str | os.PathLike, metrics: Iterable[str] = ()) -> list[Path]:
    """The loss plots (and those of `metrics`) from log rows: `TrainerState.log_history` or a trainer_log.jsonl."""
    rows = list(rows)
    losses = [p for p in (plot_training_loss(rows, output_dir), plot_eval_loss(rows, output_dir)) if p]
    return losses + plot_metrics(rows, metrics, output_dir)


class LossPlotCallback(TrainerCallback):
    """Redraws the loss plots during training, so they exist even if the run dies.

    Args:
        output_dir: Where `training_loss.png` and `eval_loss.png` are written.
        every_n_logs: Redraw the training plot after this many training logs (and at train end).
        metrics: Logged keys besides the loss to plot too (dpo's `rewards/accuracies`, rm's `accuracy`),
            each with its eval_ twin, as `training_<key>.png` / `eval_<key>.png`.
    """

    def __init__(self, output_dir: str | os.PathLike, every_n_logs: int = 10, metrics: Iterable[str] = ()):
        if every_n_logs < 1:
            raise ValueError(f"every_n_logs must be >= 1, got {every_n_logs}")
        self.output_dir = Path(output_dir)
        self.every_n_logs = every_n_logs
        self._train_logs = 0
        self.metrics = tuple(metrics)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        self._train_logs += 1
        if self._train_logs % self.every_n_logs == 0:
            self._draw(plot_training_loss, state)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero:
            self._draw(plot_eval_loss, state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero:
            self._draw(plot_training_loss, state)
            self._draw(plot_eval_loss, state)
            if self.metrics:
                self._draw(lambda rows, out: plot_metrics(rows, self.metrics, out), state)

    def _draw(self, plot, state: TrainerState) -> None:
        # A plot is a convenience: a failure to draw (full disk, odd values) must not kill the training run.
        try:
            plot(state.log_history, self.output_dir)
        except Exception as exc:  # noqa: BLE001 - see comment above
            logger.warning("could not draw %s: %s", getattr(plot, "__name__", "a metric plot"), exc)
