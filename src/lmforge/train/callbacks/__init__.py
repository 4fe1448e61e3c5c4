"""Training callbacks: honest throughput, a JSON-lines log, loss plots, the console.

Usage (the order matters: `on_log` hooks run in list order and `ThroughputCallback` adds its keys to
the `logs` dict that the later callbacks receive)::

    throughput = ThroughputCallback()
    trainer = BaseTrainer(
        ...,
        callbacks=[throughput, LogWriterCallback(out), LossPlotCallback(out)],
        batch_observers=[throughput.observe_batch],  # BaseTrainer.training_step calls it per micro-batch
    )
    if reporting_to_trackers:  # transformers puts report_to callbacks before user callbacks
        move_to_front(trainer.callback_handler, throughput)
    use_console(trainer)  # aligned lines above a progress bar in place of transformers' printed dicts
"""

from lmforge.train.callbacks.console import ConsoleCallback, use_console
from lmforge.train.callbacks.log_writer import LOG_FILE, LogWriterCallback, read_log
from lmforge.train.callbacks.loss_plot import EVAL_PLOT, TRAIN_PLOT, LossPlotCallback, plot_loss_rows
from lmforge.train.callbacks.throughput import ThroughputCallback, count_batch_tokens, move_to_front

__all__ = [
    "ConsoleCallback",
    "EVAL_PLOT",
    "LOG_FILE",
    "TRAIN_PLOT",
    "LogWriterCallback",
    "LossPlotCallback",
    "ThroughputCallback",
    "count_batch_tokens",
    "move_to_front",
    "plot_loss_rows",
    "read_log",
    "use_console",
]
