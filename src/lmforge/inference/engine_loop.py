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
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from lmforge.inference.batching import BatchingEngine, Request, SamplingParams

_DONE = object()


class Handle:
    """One request's stream of token ids, and its outcome once the stream ends."""

    def __init__(self, loop: EngineLoop, prompt: list[int], params: SamplingParams):
        self.prompt, self.params = prompt, params
        self.request: Request | None = None  # set by the loop thread when the engine takes it
        self._loop = loop
        self._tokens: queue.Queue = queue.Queue()
        self._sent = 0
        self.cancelled = threading.Event()
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._tokens.get()
            if item is _DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def cancel(self) -> None:
        self.cancelled.set()
        self._loop._commands.put(("cancel", self))

    def result(self) -> list[int]:
        """Every token, once the request has finished (blocks until then)."""
        return list(self)

    @property
    def finish_reason(self) -> str | None:
        if self.request is not None:
            return self.request.finish_reason
        return "cancelled" if self.cancelled.is_set() else None


class EngineLoop:
    def __init__(self, engine: BatchingEngine):
        self.engine = engine
        self._commands: queue.Queue = queue.Queue()
        self._handles: list[Handle] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lmforge-batching", daemon=True)
        self._thread.start()

    def submit(self, prompt: list[int], params: SamplingParams) -> Handle:
        if self._closed:
            raise RuntimeError("the engine loop is closed")
        handle = Handle(self, list(prompt), params)
        self._commands.put(("submit", handle))
        return handle

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
            self._flush()

    def _apply(self, command: str, handle: Handle) -> None:
        if command == "submit":
            if handle.cancelled.is_set():
                handle._tokens.put(_DONE)
                return
            try:
                handle.request = self.engine.submit(handle.prompt, handle.params)
            except ValueError as exc:
                handle.error = exc
                handle._tokens.put(_DONE)
                return
            self._handles.append(handle)
        elif command == "cancel" and handle.request is not None:
            self.engine.cancel(handle.request)

    def _flush(self) -> None:
        """New tokens to each handle; finished handles get their end."""
        still_open = []
        for handle in self._handles:
            tokens = handle.request.tokens
            for token in tokens[handle._sent:]:
                handle._tokens.put(token)
            handle._sent = len(tokens)
            if handle.request.done:
                handle._tokens.put(_DONE)
            else:
                still_open.append(handle)
        self._handles = still_open
