"""Counter-based sampling noise: uniforms that are a pure function of (seed, index, token id).

    uniform = hashed_uniform(seeds, index, vocab)      # [N, V] in (0, 1)
    token = (logits / temperature - torch.log(-torch.log(uniform))).argmax(-1)   # Gumbel-max: a softmax sample

Why not torch's generator: a draw from a shared generator depends on everything drawn before it, so a sequence's
sample would change with the batch it shares, the padding, the process, or a resume. Hashing (seed, index, token)
with splitmix64 gives every row its own stream, addressed by position, whatever runs beside it. Used by the
rollouts of grpo / ppo and by the continuous-batching engine, both through `gumbel_scores`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import TopKLogitsWarper, TopPLogitsWarper

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def hashed_uniform(seeds: Tensor, position: int | Tensor, vocab: int) -> Tensor:
    """[N, V] uniforms in (0, 1) from splitmix64 of (row seed, position, token id): counter-based, so independent of
    the batch. `position`: one for all rows, or [N], one per row."""
    tokens = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    # int64 arithmetic wraps, as the hash needs
    at = torch.as_tensor(position, dtype=torch.int64).to(seeds.device).reshape(-1, 1)
    x = seeds.to(torch.int64).unsqueeze(1) * _GOLDEN + at * _MIX1 + tokens.unsqueeze(0) * _MIX2
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    x = x ^ _shift_right(x, 31)
    return (_shift_right(x, 11).to(torch.float64) + 0.5) / float(1 << 53)


def gumbel_scores(scores: Tensor, seeds: Tensor, index: int | Tensor, temperature: float, top_k: int = 0,
                  top_p: float = 1.0) -> Tensor:
    """[N, V] scores whose argmax is a draw from the temperature-scaled, top-k / top-p filtered softmax (transformers'
    warpers): row i's Gumbel noise comes from (seeds[i], index (or index[i]), token), the index being the token's
    place in its completion."""
    scores = scores.float() / temperature
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    uniform = hashed_uniform(seeds.to(scores.device), index, scores.shape[-1])
    return scores - torch.log(-torch.log(uniform)).to(scores.dtype)
