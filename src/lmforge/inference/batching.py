"""Continuous batching: many generation requests share each decode step, joining and leaving at any step.

    engine = BatchingEngine(model, max_num_seqs=16, max_batch_tokens=8192)
    a = engine.submit([101, 7, 9], SamplingParams(max_tokens=32))                        # greedy
    b = engine.submit([101, 5], SamplingParams(max_tokens=16, temperature=0.8, seed=3))  # sampled, reproducible
    while engine.has_work():
        engine.step()             # admits waiting requests, decodes every running one by one token
    a.tokens, a.finish_reason     # [...], "stop" | "length" | "cancelled"

How a step works. Requests wait until a slot is free: fewer than `max_num_seqs` running, and room in
`max_batch_tokens` for its prompt and max_tokens beside every running request's prompt and max_tokens (so the
cache never outgrows it mid-answer). The requests admitted at a step are prefilled in one pass (`max_prefill_tokens`
of prompt at most; a lone one unpadded, the arithmetic of an unbatched `generate`; several left-padded and masked,
as a batched `generate` does), and their KV cache joins the running batch's, left-padded to a common width, in one
copy. Then one forward pass
decodes every running sequence: each row attends to its own tokens only (the attention mask) at its own positions
(explicit position_ids), so a row computes what it would alone. Finished and cancelled rows leave the batch at once
(their cache rows are dropped, and columns that only padding still occupies are trimmed), which is what bounds the
cache: at most `max_batch_tokens` real tokens in at most `max_num_seqs` rows, each row as wide as the longest.

Sampling per row: greedy (temperature 0) takes the argmax; otherwise temperature, top-k and top-p, then Gumbel
noise hashed from the request's seed and the token's index in its completion (`sampling_noise.gumbel_scores`),
so a seeded request draws the same tokens whatever else shares its steps.

This module holds the engine's core loop, driven by `step()`; a caller-side thread and streaming build on it.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from lmforge.inference.sampling_noise import gumbel_scores


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0
    """0: greedy."""
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    """Sampled requests draw from it alone (None: a seed from the request's number)."""
    stop_token_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0
    """> 1 discourages the prompt's and completion's tokens (transformers' RepetitionPenaltyLogitsProcessor)."""


def int64_seed(seed: int) -> int:
    """Any integer seed as a signed 64-bit one (the sampling hash's arithmetic), e.g. an OpenAI seed + answer index."""
    return (seed + (1 << 63)) % (1 << 64) - (1 << 63)


@dataclass(eq=False)  # compared by identity: the engine looks requests up in its lists at every step
class Request:
    id: int
    prompt: list[int]
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)
    """Generated so far (the stop token included when one ended it)."""
    finish_reason: str | None = None
    """None while running or waiting; then "stop" (a stop token, or a stop string the caller saw), "length" or
    "cancelled"."""

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class BatchingEngine:
    def __init__(self, model: nn.Module, *, max_num_seqs: int = 16, max_batch_tokens: int = 8192,
                 max_prefill_tokens: int = 2048, admit_batch: int = 1):
        """`max_prefill_tokens`: prompt tokens prefilled per step at most (one request always), so a burst of
        arrivals delays the running requests' next token by a bounded amount. `admit_batch`: while requests run,
        waiting ones join only once this many slots are free (or all of them fit): 1 for the lowest latency
        (serving), more for throughput (offline generation, where fewer, fuller prefill passes win)."""
        self.model = model
        self.max_num_seqs, self.max_batch_tokens = max_num_seqs, max_batch_tokens
        self.max_prefill_tokens, self.admit_batch = max_prefill_tokens, admit_batch
        self.generated_tokens = 0
        """Tokens decoded since the engine was made, every request together."""
        self._ids = itertools.count()
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._cache: DynamicCache | None = None
        self._mask: Tensor | None = None  # [B, L] 1 on each row's real tokens in the cache

    # -- requests --------------------------------------------------------------------------------------

    def submit(self, prompt: list[int], params: SamplingParams) -> Request:
        if not prompt:
            raise ValueError("a request needs at least one prompt token")
        if len(prompt) + params.max_tokens > self.max_batch_tokens:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceed "
                             f"max_batch_tokens ({self.max_batch_tokens})")
        request = Request(next(self._ids), list(prompt), params)
        self._waiting.append(request)
        return request

    def cancel(self, request: Request, reason: str = "cancelled") -> None:
        """Stop a request now; a running one frees its slot and cache rows before the next step. `reason`: its
        finish_reason ("stop" when the caller found a stop string in its text)."""
        if request.done:
            return
        request.finish_reason = reason
        if request in self._waiting:
            self._waiting.remove(request)
        else:
            self._retire([request])

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def cached_tokens(self) -> int:
        """Real tokens in the KV cache (at most max_batch_tokens)."""
        return 0 if self._mask is None else int(self._mask.sum())

    @property
    def cache_slots(self) -> int:
        """Token positions the KV cache tensors hold, left padding included: rows x the longest row."""
        return 0 if self._mask is None else self._mask.numel()

    # -- one step --------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """Admit what fits, then decode every running request by one token. The model runs in the mode its
        owner left it in (a trainer's rollout switches to eval itself; a probe may need train mode's kernels)."""
        self._admit()
        if self._running:
            self._decode()

    def _admit(self) -> None:
        free = self.max_num_seqs - len(self._running)
        if self._running and free < min(self.admit_batch, len(self._waiting)):
            return  # let slots gather: one prefill pass for several requests costs about what one costs
        joining: list[Request] = []
        held = sum(len(r.prompt) + r.params.max_tokens for r in self._running)  # what running rows may come to hold
        prefilled = 0
        while self._waiting and len(joining) < free:
            request = self._waiting[0]
            need = len(request.prompt) + request.params.max_tokens
            if held + need > self.max_batch_tokens:
                break  # its whole completion must fit beside what runs; it waits for a slot to free
            if joining and prefilled + len(request.prompt) > self.max_prefill_tokens:
                break  # the rest join at the next step, after the running rows got their token
            self._waiting.popleft()
            held, prefilled = held + need, prefilled + len(request.prompt)
            joining.append(request)
        if joining:
            cache, mask, logits = self._prefill(joining)
            self._join(joining, cache, mask)
            self._append(joining, self._sample(joining, logits))

    def _prefill(self, requests: list[Request]) -> tuple[DynamicCache, Tensor, Tensor]:
        """The prompts through the model in one pass: (their cache, its [N, L] mask, last-token logits). A lone
        prompt goes unpadded, the arithmetic of an unbatched generate; several are left-padded, each row masked to
        its own tokens at its own positions, as a batched generate does."""
        device = next(self.model.parameters()).device
        width = max(len(r.prompt) for r in requests)
        ids = torch.tensor([[0] * (width - len(r.prompt)) + r.prompt for r in requests], device=device)
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in requests], device=device)
        cache = DynamicCache(config=self.model.config)
        if len(requests) == 1:
            out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                             logits_to_keep=1)
        return cache, mask, out.logits[:, -1]

    def _join(self, requests: list[Request], cache: DynamicCache, mask: Tensor) -> None:
        """The new requests' cache rows added to the batch's, both left-padded to the wider, in one copy."""
        if not self._running:
            self._cache, self._mask, self._running = cache, mask, list(requests)
            return
        width = max(self._mask.shape[1], mask.shape[1])
        self._mask = torch.cat([F.pad(self._mask, (width - self._mask.shape[1], 0)), F.pad(mask, (width - mask.shape[1], 0))])
        for ours, theirs in zip(self._cache.layers, cache.layers):
            ours.keys = torch.cat([_left_pad(ours.keys, width), _left_pad(theirs.keys, width)])
            ours.values = torch.cat([_left_pad(ours.values, width), _left_pad(theirs.values, width)])
        self._running = self._running + list(requests)

    def _decode(self) -> None:
        device = self._mask.device
        last = torch.tensor([[r.tokens[-1]] for r in self._running], device=device)
        positions = self._mask.sum(-1, keepdim=True)  # each row's next position: its real tokens so far
        self._mask = torch.cat([self._mask, torch.ones_like(last)], dim=1)
        logits = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions,
                            cache=self._cache, use_cache=True).logits[:, -1]
        self._append(list(self._running), self._sample(self._running, logits))

    def _append(self, requests: list[Request], tokens: list[int]) -> None:
        finished = []
        self.generated_tokens += len(tokens)
        for request, token in zip(requests, tokens):
            request.tokens.append(token)
            if token in request.params.stop_token_ids:
                request.finish_reason = "stop"
            elif len(request.tokens) >= request.params.max_tokens:
                request.finish_reason = "length"
            if request.done:
                finished.append(request)
        if finished:
            self._retire(finished)

    def _retire(self, requests: list[Request]) -> None:
        keep = [i for i, r in enumerate(self._running) if r not in requests]
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self._mask.device)
        self._mask = self._mask[index]
        first = int((self._mask.sum(0) > 0).nonzero()[0])  # columns before it are padding in every row left
        self._mask = self._mask[:, first:]
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]

    # -- sampling --------------------------------------------------------------------------------------

    def _sample(self, requests: list[Request], logits: Tensor) -> list[int]:
        """One token per row from its own logits and parameters alone: the argmax for greedy rows (all at once),
        a seeded Gumbel-max draw for sampled ones."""
        penalised = [row for row, request in enumerate(requests) if request.params.repetition_penalty != 1.0]
        if penalised:
            logits = logits.clone()
            for row in penalised:
                logits[row] = _penalise_repeats(logits[row], requests[row])
        out = logits.float().argmax(-1).tolist()
        groups: dict[tuple, list[int]] = {}  # sampled rows by their warper settings: one noise call per group
        for row, request in enumerate(requests):
            p = request.params
            if p.temperature > 0:
                groups.setdefault((p.temperature, p.top_k, p.top_p), []).append(row)
        for (temperature, top_k, top_p), rows in groups.items():
            seeds = torch.tensor([_seed_of(requests[row]) for row in rows])
            index = torch.tensor([len(requests[row].tokens) for row in rows])
            picks = gumbel_scores(logits[rows], seeds, index, temperature, top_k, top_p).argmax(-1).tolist()
            for row, token in zip(rows, picks):
                out[row] = token
        return out


def _seed_of(request: Request) -> int:
    return request.params.seed if request.params.seed is not None else request.id


def _penalise_repeats(logits: Tensor, request: Request) -> Tensor:
    """transformers' repetition penalty on one row: the logits of tokens already in the prompt or completion are
    divided by the penalty where positive and multiplied where negative."""
    seen = torch.tensor(sorted(set(request.prompt) | set(request.tokens)), device=logits.device)
    scores = logits[seen]
    penalty = request.params.repetition_penalty
    return logits.scatter(0, seen, torch.where(scores < 0, scores * penalty, scores / penalty))


def _left_pad(tensor: Tensor, width: int) -> Tensor:
    """[B, H, L, D] padded with zeros on the left of L to `width` (masked out, never attended to)."""
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))
