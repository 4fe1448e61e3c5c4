"""`trainer_log.jsonl`: one JSON object per log event, appended and flushed as it happens.

Usage::

    trainer = BaseTrainer(..., callbacks=[ThroughputCallback(), LogWriterCallback(output_dir)])
    # later: [json.loads(line) for line in open(f"{output_dir}/trainer_log.jsonl")]

Each line holds ``step``, ``total_steps``, ``epoch``, ``elapsed_s`` and, when present, ``loss`` /
``eval_loss``, ``lr`` (transformers' ``learning_rate``), ``grad_norm``, ``tokens_per_s`` (a short alias
of ``throughput/tokens_per_s``), ``peak_rss_gib`` (this process's peak resident memory so far) and, on CUDA,
``peak_device_gib`` (the allocator's peak on this rank's device), followed by every other key of the log verbatim (``throughput/*``,
other ``eval_*`` metrics, the end-of-run ``train_runtime`` summary). Non-finite floats are written as
Python's ``NaN`` / ``Infinity`` so a diverged loss stays visible; `json.loads` reads them.

Only the main process (global rank 0) writes. Each line is flushed, so a crashed run keeps its log.

Resume rule: when training (re)starts at ``global_step = s``, lines with ``step > s`` are dropped: they
came from the part of the crashed run after the checkpoint, and training will log those steps again.
Lines with ``step <= s`` are kept, so the file reads as one run without duplicates. A fresh start
(``s = 0``) in a directory with an old log starts the file over, keeping only lines this callback wrote
itself in this process (e.g. an evaluation before `train()`). ``elapsed_s`` continues from the last kept
line, so it stays monotonic across resumes.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.train.callbacks.throughput import TOKENS_PER_S

LOG_FILE = "trainer_log.jsonl"

# Keys written first, in this order, under these short names; the rest of the log follows verbatim.
# `learning_rate` is renamed (LLaMA-Factory's `lr`); `throughput/tokens_per_s` gets a short alias and is
# also kept under its own name, so every `throughput/*` key is in the line.
_SHORT = {"learning_rate": "lr", TOKENS_PER_S: "tokens_per_s"}
_LEADING = ("loss", "eval_loss", "learning_rate", "grad_norm", TOKENS_PER_S)
_MOVED = frozenset({"epoch", "loss", "eval_loss", "learning_rate", "grad_norm"})


def _to_json(value):
    """numpy / torch scalars that `json` does not know become floats; anything else its string."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The rows of a `trainer_log.jsonl`; a torn last line (crash mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class LogWriterCallback(TrainerCallback):
    """Appends each log event of the Trainer to ``output_dir/trainer_log.jsonl``.

    Place it after `ThroughputCallback` in the callback list so the throughput keys are in the logs
    it writes.

    Args:
        output_dir: Directory of the run; the file is ``output_dir/trainer_log.jsonl``.
        clock: Seconds as a float; injectable for tests.
    """

    def __init__(self, output_dir: str | os.PathLike, clock: Callable[[], float] = time.time):
        self.path = Path(output_dir) / LOG_FILE
        self._clock_fn = clock
        self._start: float | None = None
        self._elapsed_offset = 0.0
        self._written = 0  # lines this instance appended, for the fresh-start rule

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._start = self._clock_fn()
        if not state.is_world_process_zero:
            return
        self._elapsed_offset = self._trim(state.global_step)

    def _trim(self, global_step: int) -> float:
        """Drop lines that training will write again; return the elapsed time to continue from."""
        if not self.path.is_file():
            return 0.0
        rows = read_log(self.path)
        if global_step > 0:
            kept = [row for row in rows if row.get("step", 0) <= global_step]
        else:
            kept = rows[len(rows) - self._written :] if self._written else []
        if len(kept) != len(rows):
            # Rewrite atomically: a crash during the trim must not lose the kept lines.
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        if global_step == 0:
            return 0.0
        return max((row.get("elapsed_s", 0.0) for row in kept), default=0.0)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if logs is None or not state.is_world_process_zero:
            return
        row = self.build_row(state, logs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_to_json) + "\n")
            f.flush()  # closing flushes too; explicit because the point is surviving a crash
        self._written += 1

    def build_row(self, state: TrainerState, logs: dict) -> dict:
        """The JSON object for one log event (public so tests and tools can see the exact shape)."""
        now = self._clock_fn()
        elapsed = self._elapsed_offset + (now - self._start if self._start is not None else 0.0)
        row: dict = {"step": state.global_step, "total_steps": state.max_steps, "epoch": logs.get("epoch")}
        for key in _LEADING:
            if key in logs:
                row[_SHORT.get(key, key)] = logs[key]
        row["elapsed_s"] = round(elapsed, 3)
        row.update(peak_memory())
        for key, value in logs.items():
            if key not in _MOVED:
                row[key] = value
        return {key: value for key, value in row.items() if value is not None}


def peak_memory() -> dict[str, float]:
    """Peak memory of this process so far, in GiB: resident set (host) and, on CUDA, the allocator's peak."""
    # ru_maxrss is KiB on Linux (bytes on macOS, where this over-reports by 1024x; lmforge trains on Linux)
    out = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_device_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out
