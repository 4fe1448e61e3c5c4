"""One generation at a time, in arrival order, on a thread of its own.

Requests arrive on the event loop; the model runs on one worker thread that takes jobs from a FIFO queue and
sends each job's pieces back to the loop. A job always runs to its end or to its cancellation on that thread,
so a client that disconnects cancels its job (generation stops after the current token, whether or not a
piece was due; a job still queued never starts) without ever leaving the engine half-used, and two answers
can never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Piece:
    index: int
    text: str


@dataclass
class Finished:
    index: int
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    """`n` answers to one prompt; `overrides` are generate() arguments (max_new_tokens, temperature, ...)."""

    prompt: list[int]
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    overrides: dict = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()

    def emit(self, event) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def events(self) -> AsyncIterator[Piece | Finished]:
        """Pieces and one Finished per answer, in order; raises what generation raised."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            if isinstance(event, BaseException):
                raise event
            yield event


class Scheduler:
    def __init__(self, engine):
        self.engine = engine
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="lmforge-generation", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        self._jobs.put(job)
        return job

    def shutdown(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=30)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - reported to the request, the worker serves the next one
                logger.exception("generation failed")
                job.emit(exc)
            job.emit(None)

    def _run(self, job: Job) -> None:
        for index in range(job.n):
            if job.cancelled.is_set():
                return
            seed = None if job.seed is None else (job.seed + index) % 2**64  # torch's seeds are unsigned 64-bit
            completion = self.engine.complete(job.prompt, job.stop, seed=seed, cancel=job.cancelled,
                                              **job.overrides)
            for text in completion:
                if job.cancelled.is_set():
                    completion.close()
                    return
                job.emit(Piece(index, text))
            if job.cancelled.is_set():
                logger.debug("job cancelled after %d tokens", completion.completion_tokens)
                return
            job.emit(Finished(index, completion.finish_reason, completion.prompt_tokens,
                              completion.completion_tokens))
