"""Sampling completions for a batch of prompts, all at once, with the KV cache (the rollouts of grpo and ppo).

    rollout = sample_completions(model, prompt_ids, prompt_mask, max_new_tokens=64, sampling={"temperature": 1.0,
                                 "top_p": 1.0, "top_k": 0}, stop_ids=[eos], pad_id=pad, seeds=row_seeds(...))
    rollout.sequences, rollout.attention_mask, rollout.position_ids   # [N, P + C], for scoring them again
    rollout.completion_mask                                           # [N, C]: 1 up to and including the stop token

Prompts arrive left-padded (`PromptCollator`), so every completion starts at column P. The rows go through the
continuous-batching engine (`inference/offline.generate_all`, the one that serves the API), all decoding together,
under `torch.no_grad` and in eval mode (no dropout, and the cache stays on where gradient checkpointing would switch
it off in training mode); a row that stops leaves the batch at once instead of decoding padding until the longest
row ends.

Sampling is a function of each row's seed, nothing else: the engine adds Gumbel noise computed from (row seed,
index of the token in its completion, token id) by a counter-based hash to the temperature-scaled, top-k / top-p
filtered logits, and decoding takes the argmax (the Gumbel-max trick: a draw from the softmax). No RNG state is read, so a resumed run samples
exactly what the uninterrupted one did, and a row's completion does not depend on which other rows share its batch:
two processes of 8 sample what one process of 16 does (the caller gives each row its global position's seed).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from lmforge.inference.batching import SamplingParams
from lmforge.inference.offline import generate_all


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
                       sampling: dict, stop_ids: list[int], pad_id: int, seeds: Tensor,
                       repetition_penalty: float = 1.0) -> Rollout:
    """Completions of every row of `prompt_ids` (rows repeated for several samples per prompt), all decoding together
    in the batching engine; row i draws with `seeds[i]` (temperature 0: greedy)."""
    prompts = [row[mask.bool()].tolist() for row, mask in zip(prompt_ids, prompt_mask)]
    base = SamplingParams(max_tokens=max_new_tokens, temperature=float(sampling.get("temperature", 1.0)),
                          top_p=float(sampling.get("top_p", 1.0)), top_k=int(sampling.get("top_k", 0) or 0),
                          stop_token_ids=tuple(stop_ids), repetition_penalty=repetition_penalty)
    params = [replace(base, seed=int(seed)) for seed in seeds.tolist()]
    was_training = model.training
    model.eval()
    try:
        answers = generate_all(model, prompts, params, max_num_seqs=len(prompts))
    finally:
        model.train(was_training)
    width = max(1, max(len(a.tokens) for a in answers))  # one pad column when nothing was generated at all
    completion_ids = torch.full((len(answers), width), pad_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    for row, answer in enumerate(answers):
        completion_ids[row, :len(answer.tokens)] = torch.tensor(answer.tokens, dtype=prompt_ids.dtype)
    mask, truncated = completion_mask_of(completion_ids, stop_ids)  # a shorter row ended at its stop token
    return Rollout(prompt_ids, prompt_mask.long(), completion_ids, mask, truncated)


@contextmanager
def adapter_merged(model: nn.Module):
    """LoRA adapters merged into their base weights for the duration (a rollout), then the base weights restored
    bit for bit from a copy (on the CPU when the model is on a GPU).

    Why: decoding with the adapter merged skips its two extra matmuls per layer and token (16% faster rollouts on
    2 CPU cores, benchmarks/rollout_adapter_merge.py). Why the copy: unmerging by subtraction leaves the frozen base
    a rounding error off after every rollout, which a resumed run (reloading the pristine base) would not share.
    Models that cannot merge exactly (no LoRA layers, quantized or DoRA layers) run as they are.
    """
    layers = _mergeable_lora_layers(model)
    if not layers:
        yield
        return
    saved = [(layer.get_base_layer().weight, layer.get_base_layer().weight.detach().to("cpu", copy=True))
             for layer in layers]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()  # resets peft's merged flags; the weights come from the copy
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def _mergeable_lora_layers(model: nn.Module) -> list[nn.Module]:
    if not hasattr(model, "merge_adapter") or not hasattr(model, "peft_config"):
        return []
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        base = layer.get_base_layer()
        weight = getattr(base, "weight", None)
        if (type(base) is not nn.Linear or weight is None or not weight.is_floating_point()
                or any(layer.use_dora.get(name, False) for name in layer.active_adapters)):
            return []
    return layers


def row_seeds(run_seed: int, step: int, first_row: int, rows: int) -> Tensor:
    """The sampling seeds of `rows` completions starting at global row `first_row` of optimizer step `step`: a
    function of where each row is in the run, nothing else (the same for any split over processes and micro-batches)."""
    base = (run_seed * 1_000_003 + step * 1_000_000_007) % (1 << 62)
    return base + first_row + torch.arange(rows, dtype=torch.int64)
