"""Sampling completions for a batch of prompts, all at once, with the KV cache (the rollouts of grpo and ppo).

    rollout = sample_completions(model, prompt_ids, prompt_mask, max_new_tokens=64, sampling={"temperature": 1.0,
                                 "top_p": 1.0, "top_k": 0}, stop_ids=[eos], pad_id=pad, seed=1234)
    rollout.sequences, rollout.attention_mask, rollout.position_ids   # [N, P + C], for scoring them again
    rollout.completion_mask                                           # [N, C]: 1 up to and including the stop token

Prompts arrive left-padded (`PromptCollator`), so every completion starts at column P. The whole batch goes
through one `generate` call (transformers' KV-cached decoding loop), under `torch.no_grad` and in eval mode (no
dropout, and the cache stays on where gradient checkpointing would switch it off in training mode).

Sampling draws from a generator seeded by `seed` alone (the caller derives it from the run's seed, the step and
the micro-batch), in a forked RNG: the same weights and seed give the same completions whatever ran before, which
is what makes a resumed run sample exactly what the uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Rollout:
    prompt_ids: Tensor
    """[N, P] left-padded prompt ids."""
    prompt_mask: Tensor
    """[N, P] 1 on prompt tokens."""
    completion_ids: Tensor
    """[N, C] sampled ids, padded after the stop token."""
    completion_mask: Tensor
    """[N, C] 1 on completion tokens up to and including the stop token."""
    truncated: Tensor
    """[N] bool: no stop token within max_new_tokens (the completion was cut)."""

    @property
    def sequences(self) -> Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def position_ids(self) -> Tensor:
        """Positions counted from each row's first real token, as `generate` gave them (left padding shifts them)."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    @property
    def lengths(self) -> Tensor:
        """[N] completion tokens per row."""
        return self.completion_mask.sum(-1)


def completion_mask_of(completion_ids: Tensor, stop_ids: list[int]) -> tuple[Tensor, Tensor]:
    """(mask [N, C] of tokens up to and including each row's first stop token, truncated [N]: no stop token)."""
    is_stop = torch.isin(completion_ids, torch.as_tensor(stop_ids, device=completion_ids.device))
    seen_before = (is_stop.long().cumsum(-1) - is_stop.long()) > 0  # a stop token strictly earlier in the row
    return (~seen_before).long(), ~is_stop.any(-1)


@torch.no_grad()
def sample_completions(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, *, max_new_tokens: int,
                       sampling: dict, stop_ids: list[int], pad_id: int, seed: int,
                       repetition_penalty: float = 1.0) -> Rollout:
    """Completions of every row of `prompt_ids` (rows repeated for several samples per prompt), one generate call."""
    was_training = model.training
    model.eval()
    temperature = float(sampling.get("temperature", 1.0))
    kwargs = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens, "eos_token_id": list(stop_ids),
              "pad_token_id": pad_id, "repetition_penalty": repetition_penalty, "use_cache": True}
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=float(sampling.get("top_p", 1.0)),
                      top_k=int(sampling.get("top_k", 0) or 0))
    devices = [prompt_ids.device.index or 0] if prompt_ids.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)
    finally:
        model.train(was_training)
    completion_ids = out[:, prompt_ids.shape[1]:]
    if completion_ids.shape[1] == 0:  # nothing generated at all (max_new_tokens 0 is refused earlier)
        completion_ids = torch.full((out.shape[0], 1), pad_id, dtype=out.dtype, device=out.device)
    mask, truncated = completion_mask_of(completion_ids, stop_ids)
    completion_ids = completion_ids.masked_fill(mask == 0, pad_id)
    return Rollout(prompt_ids, prompt_mask.long(), completion_ids, mask, truncated)


def rollout_seed(run_seed: int, step: int, micro_batch: int, rank: int) -> int:
    """The sampling seed of one micro-batch's rollout: a function of where it is in the run, nothing else."""
    return (run_seed * 1_000_003 + step * 10_007 + micro_batch * 101 + rank) % (2**63 - 1)
