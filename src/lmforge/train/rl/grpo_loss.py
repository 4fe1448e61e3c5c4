"""GRPO's arithmetic, as TRL's GRPOTrainer computes it: group-relative advantages and the clipped policy loss of
GRPO, Dr. GRPO, DAPO and BNPO, at the token or the sequence level (GSPO), with the k3 KL to a reference.

    advantages = group_advantages(rewards, num_generations=4, scale_rewards="group")      # [B]
    out = policy_loss(logps, old_logps, advantages, mask, loss_type="dapo", epsilon=0.2, epsilon_high=0.28,
                      beta=0.04, ref_logps=ref, max_completion_length=256)
    out.loss.backward(); out.metrics   # {"kl": ..., "clip_ratio/low_mean": ..., "clip_ratio/high_mean": ...}

Shapes: `rewards` [B] with the `num_generations` completions of one prompt adjacent; `logps`, `old_logps`,
`ref_logps` and `mask` [B, T] per completion token (mask 1 on completion tokens, 0 on padding).

The formulas (TRL's, cited so a reader can check them):
- advantage A_i = r_i - mean(group of i), divided by std + 1e-4 of the group (`scale_rewards: group`), of the whole
  batch (`batch`), or not at all (`none`, Dr. GRPO's choice);
- importance weight w = exp(logp - old_logp) per token (`token`), or exp of its masked mean over the sequence
  (`sequence`, GSPO), the same for every token of the sequence;
- per-token loss = -min(w A, clip(w, 1 - epsilon, 1 + epsilon_high) A) + beta (exp(ref - logp) - (ref - logp) - 1);
- normalisation: `grpo` averages each sequence over its tokens, then the sequences; `bnpo` divides by the batch's
  completion tokens; `dr_grpo` by B x max_completion_length; `dapo` by the completion tokens of the whole global
  batch (`num_items_in_batch`, every micro-batch and process; this batch's own tokens when not given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
ScaleRewards = Literal["group", "batch", "none"]
ADVANTAGE_EPS = 1e-4  # TRL adds it to the std so a group of equal rewards gives advantages 0, not NaN


def group_advantages(rewards: torch.Tensor, num_generations: int,
                     scale_rewards: ScaleRewards = "group") -> torch.Tensor:
    """Each reward minus its group's mean, scaled by the group's (or the batch's) std + 1e-4, or unscaled."""
    if rewards.dim() != 1 or rewards.numel() % num_generations:
        raise ValueError(f"rewards must be [B] with B a multiple of num_generations ({num_generations}), "
                         f"got shape {list(rewards.shape)}")
    grouped = rewards.view(-1, num_generations)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale_rewards == "group":
        std = grouped.std(dim=1).repeat_interleave(num_generations)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    elif scale_rewards == "none":
        return centred
    else:
        raise ValueError(f"scale_rewards: {scale_rewards!r} is not one of group, batch, none")
    return centred / (std + ADVANTAGE_EPS)


def zero_variance_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """[groups] 1.0 where a group's rewards are all equal: such groups carry no learning signal."""
    grouped = rewards.view(-1, num_generations)
    return (grouped.max(dim=1).values == grouped.min(dim=1).values).float()


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, advantages: torch.Tensor, mask: torch.Tensor, *,
                loss_type: LossType = "dapo", epsilon: float = 0.2, epsilon_high: float | None = None,
                beta: float = 0.0, ref_logps: torch.Tensor | None = None,
                importance_sampling_level: Literal["token", "sequence"] = "token",
                max_completion_length: int | None = None, num_items_in_batch: float | None = None) -> PolicyLoss:
    """The GRPO-family loss of one micro-batch (see the module docstring); `old_logps` None: one iteration per
    rollout, the ratio is then 1 with the policy's own gradient (REINFORCE with a group baseline when beta is 0)."""
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    log_ratio = logps - old
    if importance_sampling_level == "token":
        log_weights = log_ratio
    elif importance_sampling_level == "sequence":
        log_weights = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:
        raise ValueError(f"importance_sampling_level: {importance_sampling_level!r} is not token or sequence")
    high = epsilon if epsilon_high is None else epsilon_high
    weight = torch.exp(log_weights)
    clipped = torch.clamp(weight, 1 - epsilon, 1 + high)
    adv = advantages.unsqueeze(-1)
    per_token = -torch.min(weight * adv, clipped * adv)
    metrics = {}
    if beta:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps (the reference model's log-probs)")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
        metrics["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1.0))
    tokens = mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type dr_grpo needs max_completion_length")
        loss = (per_token * mask).sum() / (logps.shape[0] * max_completion_length)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / (num_items_in_batch if num_items_in_batch else tokens)
    else:
        raise ValueError(f"loss_type: {loss_type!r} is not one of grpo, dr_grpo, dapo, bnpo")
    expanded = weight.expand_as(mask)
    low_clip = ((expanded < 1 - epsilon) & (adv < 0)).to(mask.dtype)
    high_clip = ((expanded > 1 + high) & (adv > 0)).to(mask.dtype)
    metrics["clip_ratio/low_mean"] = float((low_clip * mask).sum() / tokens)
    metrics["clip_ratio/high_mean"] = float((high_clip * mask).sum() / tokens)
    return PolicyLoss(loss, metrics)
