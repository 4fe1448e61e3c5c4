"""SIGTERM ends training at the end of the current step, with a checkpoint saved: how the web UI's Stop works.

    kill -TERM <pid of lmforge train>     # the step finishes, checkpoint-<step> is written, the run ends normally

Why: a plain SIGTERM kills the process mid-step, so everything since the last `save_steps` is lost. Here the
handler only sets a flag; at the next step end the callback asks transformers' Trainer to save and stop, which it
does through its own checkpoint path (atomic, resumable with `resume_from_checkpoint`). A second SIGTERM, or one
before training starts, falls back to the default (immediate exit). Installed from the main thread only.
"""

from __future__ import annotations

import signal
import threading

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.logging import get_logger

logger = get_logger(__name__)


class GracefulStopCallback(TrainerCallback):
    def __init__(self):
        self.requested = False

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._request)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _request(self, signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM exits at once
        self.requested = True

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.requested:
            logger.info("stop requested (SIGTERM): saving a checkpoint at step %d and ending training",
                        state.global_step)
            control.should_save = True
            control.should_training_stop = True
        return control
