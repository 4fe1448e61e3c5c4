"""Per-token log-probs (and entropies) of sampled completions, without full-vocabulary logits for the batch.

    logps, entropy = completion_log_probs(model, rollout, temperature=1.0, chunk_size=1024, with_entropy=True)

The policy (with gradient), its frozen old self and the reference all score a rollout the same way: one forward
pass over prompt + completion with the output projection skipped (`forward_hidden`), then the projection applied
only at the completion positions, `chunk_size` positions at a time (`token_cross_entropy`; its backward recomputes
each chunk). Logits are divided by the sampling temperature first, as TRL does, so the ratio compares the
distributions the completions were drawn from. A model whose head is not a plain Linear (a LoRA-wrapped head,
rescaled logits) is scored from its own logits instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model.hidden_states import forward_hidden
from lmforge.train.losses import token_cross_entropy
from lmforge.train.rl.rollout import Rollout
from lmforge.types import IGNORE_INDEX


def scoring_inputs(rollout: Rollout) -> dict:
    """The forward inputs that score a rollout: prompt + completion at the positions `generate` gave them."""
    return {"input_ids": rollout.sequences, "attention_mask": rollout.attention_mask,
            "position_ids": rollout.position_ids, "use_cache": False}


def completion_log_probs(model: nn.Module, rollout: Rollout, *, temperature: float = 1.0,
                         chunk_size: int | None = None, chunked: bool = True,
                         with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """(log p of each completion token [N, C] fp32, zero off the mask; entropy [N, C] or None, never with grad)."""
    if not chunked:
        start, width = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
        logits = model(**scoring_inputs(rollout)).logits[:, start - 1:start - 1 + width]
        return _from_logits(logits, rollout, temperature, with_entropy)
    _, hidden = forward_hidden(model, scoring_inputs(rollout))
    return log_probs_from_hidden(hidden, _unwrap(model).get_output_embeddings(), rollout, temperature=temperature,
                                 chunk_size=chunk_size, chunked=True, with_entropy=with_entropy)


def log_probs_from_hidden(hidden: Tensor, head: nn.Module, rollout: Rollout, *, temperature: float = 1.0,
                          chunk_size: int | None = None, chunked: bool = True,
                          with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """`completion_log_probs` from the final hidden states of the whole sequence [N, P + C, H] (a forward someone else
    ran, e.g. a value-head model's). `chunked` False: the head module itself projects the completion positions."""
    start, width = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    hidden = hidden[:, start - 1:start - 1 + width]  # position t predicts token t + 1
    if not chunked:
        return _from_logits(head(hidden), rollout, temperature, with_entropy)
    scale = 1.0 / temperature if temperature > 0 else 1.0
    hidden = hidden * scale
    targets = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, IGNORE_INDEX)
    bias = head.bias * scale if head.bias is not None else None
    per_token = -token_cross_entropy(hidden, head.weight, targets, chunk_size=chunk_size, lm_head_bias=bias,
                                     reduction="none")
    keep = targets.reshape(-1).ne(IGNORE_INDEX)
    logps = torch.zeros(keep.shape[0], dtype=per_token.dtype, device=per_token.device).masked_scatter(keep, per_token)
    logps = logps.view_as(targets)
    entropy = _chunked_entropy(hidden.detach(), head.weight, bias, chunk_size) if with_entropy else None
    return logps, entropy


def _from_logits(logits: Tensor, rollout: Rollout, temperature: float, with_entropy: bool):
    scale = 1.0 / temperature if temperature > 0 else 1.0
    log_probs = F.log_softmax(logits.float() * scale, dim=-1)
    targets = rollout.completion_ids.clamp(min=0).unsqueeze(-1)
    logps = log_probs.gather(-1, targets).squeeze(-1) * rollout.completion_mask
    entropy = -(log_probs.exp() * log_probs).sum(-1).detach() if with_entropy else None
    return logps, entropy


@torch.no_grad()
def _chunked_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, chunk_size: int | None) -> Tensor:
    flat = hidden.reshape(-1, hidden.shape[-1])
    step = chunk_size or 1024
    out = []
    for piece in flat.split(step):
        logits = F.linear(piece.to(weight.dtype), weight, bias).float()
        log_probs = F.log_softmax(logits, dim=-1)
        out.append(-(log_probs.exp() * log_probs).sum(-1))
    return torch.cat(out).view(hidden.shape[:-1])


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
