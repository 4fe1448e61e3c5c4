"""The batching engine on a thread of its own: requests from any thread, tokens streamed back as they are decoded.

    loop = EngineLoop(BatchingEngine(model, max_num_seqs=16))
    handle = loop.submit(prompt_ids, SamplingParams(max_tokens=64, temperature=0.7, seed=1))
    for token in handle:          # token ids as the engine decodes them; ends when the request finishes
        ...
    handle.finish_reason          # "stop" | "length" | "cancelled"
    handle.cancel()               # from any thread: the slot is freed before the next decode step
    loop.close()

Only the loop thread touches the engine (and the model): submissions and cancellations queue up and are applied
at the start of the next step, so a step never sees a half-added request. While nothing runs the thread sleeps on
the queue.

A handle made with a `sink` gets its tokens pushed instead: `sink(new_token_ids, done)` is called on the loop
thread after each step that gave it tokens (the API server hands them to its event loop this way).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from lmforge.inference.batching import BatchingEngine, Request, SamplingParams

_DONE = object()


class Handle:
    """One request's stream of token ids, and its outcome once the stream ends."""

    def __init__(self, loop: EngineLoop, prompt: list[int], params: SamplingParams,
                 sink: Callable[[list[int], bool], None] | None = None):
        self.prompt, self.params = prompt, params
        self.request: Request | None = None  # set by the loop thread when the engine takes it
        self._loop = loop
        self._tokens: queue.Queue = queue.Queue()
        self._sink = sink or self._queue
        self._sent = 0
        self.cancelled = threading.Event()
        self._reason = "cancelled"
        self.error: BaseException | None = None

    def _queue(self, tokens: list[int], done: bool) -> None:
        for token in tokens:
            self._tokens.put(token)
        if done:
            self._tokens.put(_DONE)

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._tokens.get()
            if item is _DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def cancel(self, reason: str = "cancelled") -> None:
        """End the request at the next step; `reason` becomes its finish_reason ("stop": the caller found a stop
        string)."""
        self._reason = reason
        self.cancelled.set()
        self._loop._commands.put(("cancel", self))

    def result(self) -> list[int]:
        """Every token, once the request has finished (blocks until then)."""
        return list(self)

    @property
    def finish_reason(self) -> str | None:
        if self.request is not None:
            return self.request.finish_reason
        return self._reason if self.cancelled.is_set() else None


class EngineLoop:
    def __init__(self, engine: BatchingEngine, rate_window_s: float = 10.0):
        self.engine = engine
        self._commands: queue.Queue = queue.Queue()
        self._handles: list[Handle] = []
        self._closed = False
        self._rate_window_s = rate_window_s
        self._history: deque[tuple[float, int]] = deque()  # (time, engine.generated_tokens) after each step
        self._thread = threading.Thread(target=self._run, name="lmforge-batching", daemon=True)
        self._thread.start()

    def submit(self, prompt: list[int], params: SamplingParams,
               sink: Callable[[list[int], bool], None] | None = None) -> Handle:
        if self._closed:
            raise RuntimeError("the engine loop is closed")
        handle = Handle(self, list(prompt), params, sink)
        self._commands.put(("submit", handle))
        return handle

    def stats(self) -> dict:
        """What `/metrics` reports: requests waiting (the queue, submissions not yet taken included) and running,
        tokens decoded per second over the last `rate_window_s`, and KV-cache use."""
        engine = self.engine
        history = list(self._history)
        rate = 0.0
        if len(history) > 1 and history[-1][0] > history[0][0]:
            rate = (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0])
        if history and time.monotonic() - history[-1][0] > self._rate_window_s:
            rate = 0.0
        return {"waiting": engine.waiting + self._commands.qsize(), "running": engine.running,
                "tokens_per_second": rate, "generated_tokens": engine.generated_tokens,
                "kv_cache_tokens": engine.cached_tokens, "kv_cache_slots": engine.cache_slots,
                "max_batch_tokens": engine.max_batch_tokens, "max_num_seqs": engine.max_num_seqs}

    def close(self) -> None:
        self._closed = True
        self._commands.put(("close", None))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            # block while idle; otherwise take whatever arrived since the last step
            block = not self.engine.has_work()
            while True:
                try:
                    command, handle = self._commands.get(block=block)
                except queue.Empty:
                    break
                block = False
                if command == "close":
                    for open_handle in self._handles:
                        self.engine.cancel(open_handle.request)
                    self._flush()
                    return
                self._apply(command, handle)
            if self.engine.has_work():
                try:
                    self.engine.step()
                except BaseException as exc:  # noqa: BLE001 - every waiting caller gets it, the loop goes on
                    for open_handle in self._handles:
                        open_handle.error = exc
                        self.engine.cancel(open_handle.request)
                self._note_rate()
            self._flush()

    def _note_rate(self) -> None:
        now = time.monotonic()
        self._history.append((now, self.engine.generated_tokens))
        while len(self._history) > 2 and now - self._history[0][0] > self._rate_window_s:
            self._history.popleft()

    def _apply(self, command: str, handle: Handle) -> None:
        if command == "submit":
            if handle.cancelled.is_set():
                handle._sink([], True)
                return
            try:
                handle.request = self.engine.submit(handle.prompt, handle.params)
            except ValueError as exc:
                handle.error = exc
                handle._sink([], True)
                return
            self._handles.append(handle)
        elif command == "cancel" and handle.request is not None:
            self.engine.cancel(handle.request, handle._reason)

    def _flush(self) -> None:
        """New tokens to each handle; finished handles get their end."""
        still_open = []
        for handle in self._handles:
            tokens, done = handle.request.tokens, handle.request.done
            new = tokens[handle._sent:]
            handle._sent = len(tokens)
            if new or done:
                try:
                    handle._sink(new, done)
                except Exception:  # noqa: BLE001 - a broken consumer loses its request, not the loop
                    self.engine.cancel(handle.request)
                    continue
            if not done:
                still_open.append(handle)
        self._handles = still_open
