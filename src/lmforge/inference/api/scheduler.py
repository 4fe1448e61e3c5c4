"""A request's answers through the shared batching engine, as events on the server's event loop.

    job = Job(prompt_ids, engine.sampling_params(max_new_tokens=64), n=2, stop=["\\n"])
    Scheduler(engine).submit(job)
    async for event in job.events():       # Piece(index, text) ..., Finished(index, finish_reason, ...)
        ...
    job.cancel()                           # the client left: every answer's slot is freed before the next step

Each of the `n` answers is one request in the engine (answer i seeded with seed + i), decoded beside every other
request the server holds. The engine's thread hands each step's new token ids to the event loop; the text is
decoded there (`TextStream`), and a stop string found in it ends that answer in the engine at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import partial

from lmforge.inference.batching import SamplingParams, int64_seed
from lmforge.inference.text_stream import TextStream


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
    """`n` answers to one prompt, each generated with `params` (answer i seeded with params.seed + i)."""

    prompt: list[int]
    params: SamplingParams
    n: int = 1
    stop: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._loop = asyncio.get_running_loop()
        self._deliveries: asyncio.Queue = asyncio.Queue()
        self._handles: list = []
        self._engine = None

    def cancel(self) -> None:
        self.cancelled.set()
        for handle in self._handles:
            handle.cancel()

    def _deliver(self, index: int, tokens: list[int], done: bool) -> None:
        """Called on the engine's thread; raises once the event loop is closed, which cancels the request."""
        self._loop.call_soon_threadsafe(self._deliveries.put_nowait, (index, tokens, done))

    async def events(self) -> AsyncIterator[Piece | Finished]:
        """Pieces and one Finished per answer; raises what generation raised."""
        engine = self._engine
        stop_ids = set(self.params.stop_token_ids)
        texts = [TextStream(engine.tokenizer, self.stop, engine.generation.skip_special_tokens) for _ in range(self.n)]
        counts, finished = [0] * self.n, [False] * self.n
        try:
            while not all(finished):
                index, tokens, done = await self._deliveries.get()
                if finished[index]:
                    continue  # tokens decoded after a stop string, before the engine heard of it
                handle, text = self._handles[index], texts[index]
                counts[index] += len(tokens)
                if piece := text.push([t for t in tokens if t not in stop_ids]):
                    yield Piece(index, piece)
                if text.stopped and not done:
                    handle.cancel("stop")
                    done = True
                if done:
                    if handle.error is not None:
                        raise handle.error
                    if piece := text.finish():
                        yield Piece(index, piece)
                    finished[index] = True
                    reason = "stop" if text.stopped else handle.finish_reason
                    yield Finished(index, reason, len(self.prompt), counts[index])
        finally:
            if not all(finished):
                self.cancel()


class Scheduler:
    def __init__(self, engine):
        """`engine`: a ChatEngine (its tokenizer, generation settings and engine loop)."""
        self.engine = engine

    def submit(self, job: Job) -> Job:
        job._engine = self.engine
        loop = self.engine.loop
        for index in range(job.n):
            seed = job.params.seed
            params = job.params if seed is None or index == 0 else replace(job.params, seed=int64_seed(seed + index))
            job._handles.append(loop.submit(job.prompt, params, sink=partial(job._deliver, index)))
        return job

    def stats(self) -> dict:
        return self.engine.loop.stats()

