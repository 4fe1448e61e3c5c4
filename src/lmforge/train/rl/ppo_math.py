"""PPO's arithmetic, with no model or trainer state: per-token rewards, GAE, whitening, the adaptive KL coefficient,
running score moments and the clipped losses. Behaviour and defaults follow TRL 0.9's PPOTrainer (what LLaMA-Factory
0.9 runs for `stage: ppo`).

    rewards, kl = per_token_rewards(scores, logps, ref_logps, mask, kl_coef=0.2)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    advantages = masked_whiten(advantages, mask)
    out = ppo_losses(new_logps, logps, new_values, values, returns, advantages, mask)

All tensors are [N, C] over completion tokens; `mask` is 1 on real completion tokens (right-padded rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:  # Bessel's correction, as TRL's masked_var
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(values - mean) / std over the masked entries; shift_mean False adds the mean back (whitened rewards keep
    their sign on average, TRL's whiten_rewards)."""
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return whitened if shift_mean else whitened + mean


def per_token_rewards(scores: Tensor, logps: Tensor, ref_logps: Tensor, mask: Tensor,
                      kl_coef: float) -> tuple[Tensor, Tensor]:
    """(rewards [N, C]: -kl_coef * (logp - ref_logp) at every completion token plus the score at the last one,
    kl [N, C]: the per-token estimate logp - ref_logp), zero off the mask."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask.long().cumsum(-1).argmax(-1))  # the index of each row's last real token (first of the max)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) -> (advantages, returns = advantages + values), not
    whitened. Values after a row's end count 0, so its last token bootstraps from nothing."""
    values, rewards = values * mask, rewards * mask
    width = rewards.shape[1]
    running = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    for t in reversed(range(width)):
        next_values = values[:, t + 1] if t < width - 1 else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        running = delta + gamma * lam * running
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    return advantages, advantages + values


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019: the KL coefficient moves so the measured KL tracks `target`, by at most 20% of the gap
    per `horizon` samples."""

    value: float = 0.2
    target: float = 6.0
    horizon: int = 10000

    def update(self, current_kl: float, n_samples: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon
        return self.value


class RunningMoments:
    """Running mean and (unbiased) std of every score seen so far, merged batch by batch (Chan et al.'s parallel
    variance), as TRL's RunningMoments behind use_score_scaling / use_score_norm."""

    def __init__(self):
        self.mean, self.std, self.var, self.count = 0.0, 1.0, 1.0, 1e-24

    def update(self, values: Tensor) -> None:
        values = values.double()
        batch_count = values.numel()
        batch_mean = float(values.mean())
        batch_var = float(values.var(unbiased=False))  # population variance of the batch
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var = m2 / total
        self.std = (self.var * total / max(total - 1, 1e-24)) ** 0.5
        self.count = total

    def normalise(self, scores: Tensor) -> Tensor:
        """After `update`: (scores - running mean) / (running std + eps) (LLaMA-Factory's ppo_score_norm)."""
        return (scores - self.mean) / (self.std + torch.finfo(scores.dtype).eps)


@dataclass
class PPOLoss:
    loss: Tensor
    policy_loss: Tensor
    value_loss: Tensor
    clipfrac: Tensor
    value_clipfrac: Tensor
    approx_kl: Tensor


def ppo_losses(logps: Tensor, old_logps: Tensor, values: Tensor, old_values: Tensor, returns: Tensor,
               advantages: Tensor, mask: Tensor, *, cliprange: float = 0.2, cliprange_value: float = 0.2,
               vf_coef: float = 0.1) -> PPOLoss:
    """The clipped surrogate policy loss plus vf_coef x the clipped value loss, token means over the mask."""
    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    value_losses = torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    value_loss = 0.5 * masked_mean(value_losses, mask)
    value_clipfrac = masked_mean(((clipped_values - returns) ** 2 > (values - returns) ** 2).float(), mask)
    log_ratio = (logps - old_logps) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    policy_loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PPOLoss(policy_loss + vf_coef * value_loss, policy_loss, value_loss, clipfrac.detach(),
                   value_clipfrac.detach(), approx_kl.detach())
