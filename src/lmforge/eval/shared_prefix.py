"""Requests that share a context, laid out as one sequence: the context once, then each continuation's tokens,
each attending to the context and to itself only (`pack_requests`, `shared_prefix_mask`).

    rows = pack_requests([(ctx, [" a", " b", "c"] as ids), ...], max_length=2048)
    rows[0].tokens       # ctx + cont_1[:-1] + cont_2[:-1] + ...     (the last token of a continuation is never fed)
    rows[0].positions    # 0..len(ctx)-1, then len(ctx).. again for every continuation
    rows[0].targets      # (request index, positions whose hidden states predict its tokens, its tokens)

Why: lm-evaluation-harness feeds context + continuation once per choice, so a 4-choice question with a 60-token
context and 20-token endings costs 4 x 80 tokens; here it costs 60 + 4 x 19, and the question's log-likelihoods
are the same numbers (the same tokens at the same positions see the same keys; only the summation order inside
attention differs, ~1e-6 in fp32). A choice of one token feeds nothing at all: it is read off the context's last
position, as lm-eval's one-token cache does.

A continuation whose context + continuation exceeds the model's length is truncated from the left exactly as
lm-eval truncates it, and then has a context of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class PackedRow:
    """One fed sequence: a context and the fed tokens of the continuations scored after it."""

    context: tuple[int, ...]
    segments: list[tuple[int, ...]] = field(default_factory=list)  # each continuation's tokens but its last
    targets: list[tuple[int, list[int], list[int]]] = field(default_factory=list)  # (request, positions, tokens)

    @property
    def tokens(self) -> list[int]:
        return [*self.context, *(t for segment in self.segments for t in segment)]

    @property
    def shared(self) -> bool:
        """More than one non-empty segment: the row needs the block mask, not the causal one."""
        return sum(1 for s in self.segments if s) > 1

    def __len__(self) -> int:
        return len(self.context) + sum(len(s) for s in self.segments)

    def positions(self) -> list[int]:
        base = len(self.context)
        return [*range(base), *(base + j for segment in self.segments for j in range(len(segment)))]

    def segment_ids(self) -> list[int]:
        """0 for the context, k for the k-th segment's tokens (k from 1)."""
        return [0] * len(self.context) + [k for k, segment in enumerate(self.segments, 1) for _ in segment]


def pack_requests(requests: Sequence[tuple[list[int], list[int]]], max_length: int, share: bool = True,
                  max_row: int | None = None) -> list[PackedRow]:
    """Rows covering every request: requests with the same context tokens share a row (when `share`), each
    distinct continuation fed once. A row stops growing at `max_row` tokens (default 2 x max_length); further
    continuations of that context start another row with the context repeated."""
    max_row = max_row or 2 * max_length
    rows: list[PackedRow] = []
    open_rows: dict[tuple[int, ...], PackedRow] = {}
    for index, (context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError("a continuation encodes to no tokens")
        fed = (context + continuation)[-(max_length + 1):][:-1]  # lm-eval's left truncation
        tail = len(continuation) - 1
        if tail > len(fed):
            raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's "
                             f"{max_length} positions")
        ctx, segment = tuple(fed[:len(fed) - tail]), tuple(fed[len(fed) - tail:])
        if not ctx:
            raise ValueError("a request has no context token to condition on")
        row = open_rows.get(ctx) if share else None
        if row is not None and segment not in row.segments and len(row) + len(segment) > max_row:
            row = None
        if row is None:
            row = PackedRow(ctx)
            rows.append(row)
            if share:
                open_rows[ctx] = row
        if segment in row.segments:
            k = row.segments.index(segment)
        else:
            row.segments.append(segment)
            k = len(row.segments) - 1
        start = len(row.context) + sum(len(s) for s in row.segments[:k])
        positions = [len(row.context) - 1] + [start + j for j in range(tail)]
        row.targets.append((index, positions, list(continuation)))
    return rows


def shared_prefix_mask(rows: Sequence[PackedRow], width: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask [B, 1, width, width] of right-padded packed rows: a token sees the context
    up to itself and the earlier tokens of its own segment; a pad position sees only itself (no empty softmax
    row). Additive (0 / dtype min) so that both the sdpa and the eager attention read it."""
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        ids = row.segment_ids()
        segment[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    allowed = causal & (key != -1) & (query != -1) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
