"""Many prompts through the batching engine on the caller's thread: predict, generative evaluation, RL rollouts.

    results = generate_all(model, prompts, SamplingParams(max_tokens=64, stop_token_ids=(eos,)),
                           max_num_seqs=16, tokenizer=tok, stops=["\\n\\n"])
    results[i].tokens, results[i].text, results[i].finish_reason

Every prompt is submitted at once and the engine keeps `max_num_seqs` of them decoding: a finished answer's slot
goes to the next prompt at the next step, so nothing waits for the longest answer of a batch. With `stops` (which
needs `tokenizer`), each answer's text is decoded as it grows and a stop string ends that answer at once; `text`
is then cut before it. Results come back in prompt order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from lmforge.inference.batching import BatchingEngine, Request, SamplingParams
from lmforge.inference.text_stream import TextStream


@dataclass
class Generation:
    tokens: list[int]
    """Generated ids, the stop token included when one ended the answer."""
    finish_reason: str
    text: str | None = None
    """The decoded answer without its stop token, cut before a stop string (None without a tokenizer)."""


def generate_all(model: nn.Module, prompts: Sequence[list[int]], params: SamplingParams | Sequence[SamplingParams],
                 *, max_num_seqs: int = 16, max_batch_tokens: int | None = None, tokenizer=None,
                 stops: Sequence[str] = (), skip_special_tokens: bool = True, progress=None,
                 admit_batch: int | None = None) -> list[Generation]:
    """The answer to each prompt (`params` one for all, or one per prompt). `max_batch_tokens` None: room for
    `max_num_seqs` of the longest prompt and answer. `progress`: an object with `update(n)` (a tqdm bar), told of
    each finished answer."""
    per_prompt = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
    if stops and tokenizer is None:
        raise ValueError("stop strings need the tokenizer to read the answers' text")
    if max_batch_tokens is None:
        longest = max((len(p) + q.max_tokens for p, q in zip(prompts, per_prompt)), default=1)
        max_batch_tokens = longest * max_num_seqs
    engine = BatchingEngine(model, max_num_seqs=max_num_seqs, max_batch_tokens=max_batch_tokens,
                            admit_batch=admit_batch or max(1, max_num_seqs // 4))
    requests = [engine.submit(prompt, p) for prompt, p in zip(prompts, per_prompt)]
    texts = ({r.id: TextStream(tokenizer, stops, skip_special_tokens) for r in requests} if tokenizer is not None
             else {})
    fed = dict.fromkeys(texts, 0)
    open_requests = list(requests)
    while engine.has_work():
        engine.step()
        still_open = []
        for request in open_requests:
            if request.id in texts:
                _read(request, texts[request.id], fed, engine)
            if request.done:
                if progress is not None:
                    progress.update(1)
            else:
                still_open.append(request)
        open_requests = still_open
    return [_result(r, texts.get(r.id)) for r in requests]


def _read(request: Request, text: TextStream, fed: dict[int, int], engine: BatchingEngine) -> None:
    """Decode the request's new tokens; a stop string in its text ends it now."""
    new = request.tokens[fed[request.id]:]
    if not new or text.stopped:
        return
    fed[request.id] = len(request.tokens)
    stop_ids = request.params.stop_token_ids
    text.push([t for t in new if t not in stop_ids])
    if text.stopped:
        engine.cancel(request, "stop")


def _result(request: Request, text: TextStream | None) -> Generation:
    if text is None:
        return Generation(request.tokens, request.finish_reason)
    text.finish()
    return Generation(request.tokens, "stop" if text.stopped else request.finish_reason, text.text)
