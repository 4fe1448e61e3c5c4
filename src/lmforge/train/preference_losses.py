"""Preference losses as pure tensor functions of sequence log-probabilities: rm, dpo family, kto.

    from lmforge.train.preference_losses import dpo_loss
    out = dpo_loss("sigmoid", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1)
    out.losses.mean().backward(); out.chosen_rewards, out.rejected_rewards

Inputs are per-pair tensors [B]: the summed log-probability of each response given its prompt (policy and
reference), and for ipo / orpo / simpo their per-token average, as LLaMA-Factory computes them. Conventions
follow LLaMA-Factory 0.9.5 (and through it trl), so a config moved over optimises the same objective:

  sigmoid  -log σ(β·h) (1 - ε) - log σ(-β·h) ε        h = (π_c - π_r) - (ref_c - ref_r), ε = label smoothing
  hinge    relu(1 - β·h)
  ipo      (h - 1/(2β))²                               on average log-probs
  orpo     -π̄_c - β·log σ(log odds(π̄_c) - log odds(π̄_r)),  odds(p) = p / (1 - p)   no reference
  simpo    -log σ(β·(π̄_c - π̄_r) - γ)                   γ = simpo_gamma, no reference
  kto      w_c (1 - σ(β (log r_c - z))) and w_r (1 - σ(β (z - log r_r))), z = max(0, mean KL estimate)

Rewards are β·(π - ref) with a reference, β·π̄ without (orpo, simpo), as in LLaMA-Factory's logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.config.preference_args import PREF_LOSSES  # noqa: E402 - the names live with the config key
REFERENCE_FREE = frozenset({"orpo", "simpo"})
"""pref_loss values that need no reference model."""
AVERAGED = frozenset({"ipo", "orpo", "simpo"})
"""pref_loss values computed on per-token average log-probs rather than sums."""


@dataclass
class PreferenceLoss:
    losses: Tensor  # [B], before any weighting of the batch
    chosen_rewards: Tensor  # [B], detached
    rejected_rewards: Tensor  # [B], detached


def pairwise_reward_loss(chosen_scores: Tensor, rejected_scores: Tensor) -> Tensor:
    """Bradley-Terry loss of a reward model, per pair: -log σ(r_chosen - r_rejected)."""
    return -F.logsigmoid(chosen_scores.float() - rejected_scores.float())


def dpo_loss(
    loss_type: str,
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
) -> PreferenceLoss:
    """Per-pair loss of `loss_type` (see the module docstring); log-probs as the type expects them.

    Raises:
        ValueError: unknown `loss_type`, or a reference-based type without reference log-probs.
    """
    if loss_type not in PREF_LOSSES:
        raise ValueError(f"unknown pref_loss '{loss_type}'; choose one of: {', '.join(PREF_LOSSES)}")
    if loss_type == "orpo":
        return _orpo(chosen_logps, rejected_logps, beta)
    if loss_type == "simpo":
        logits = beta * (chosen_logps - rejected_logps) - simpo_gamma
        return PreferenceLoss(
            -F.logsigmoid(logits), (beta * chosen_logps).detach(), (beta * rejected_logps).detach()
        )
    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError(f"pref_loss '{loss_type}' needs reference log-probs")
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:  # ipo
        losses = (h - 1 / (2 * beta)) ** 2
    return PreferenceLoss(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def _orpo(chosen_logps: Tensor, rejected_logps: Tensor, beta: float) -> PreferenceLoss:
    # log(p / (1 - p)) with log p given: log p - log(1 - exp(log p)); log1p(-exp(x)) is exact for x < 0.
    log_odds = (chosen_logps - rejected_logps) - (
        torch.log1p(-torch.exp(chosen_logps)) - torch.log1p(-torch.exp(rejected_logps))
    )
    losses = -chosen_logps - beta * F.logsigmoid(log_odds)
    return PreferenceLoss(losses, (beta * chosen_logps).detach(), (beta * rejected_logps).detach())


def kto_loss(
    logps: Tensor,
    ref_logps: Tensor,
    kl_logps: Tensor,
    ref_kl_logps: Tensor,
    desirable: Tensor,
    *,
    beta: float,
    chosen_weight: float = 1.0,
    rejected_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """KTO per sample (Ethayarajh et al. 2024, as trl and LLaMA-Factory compute it).

    Args:
        logps, ref_logps: [B] summed log-probs of each sample's response, policy and reference.
        kl_logps, ref_kl_logps: [B] the same for mismatched (prompt, response) pairs, for the KL estimate.
        desirable: [B] bool, the kto_tag of each sample.
        beta, chosen_weight, rejected_weight: KTO's β and the weights of desirable / undesirable samples.

    Returns:
        (losses [B], chosen_rewards [n_desirable], rejected_rewards [n_undesirable], kl scalar); rewards
        and kl are detached. kl = max(0, mean(kl_logps - ref_kl_logps)), the batch estimate of
        KL(policy || reference), used as the reference point and not differentiated.
    """
    kl = (kl_logps - ref_kl_logps).mean().clamp(min=0).detach()
    log_ratio = logps - ref_logps
    desirable = desirable.bool()
    chosen = chosen_weight * (1 - torch.sigmoid(beta * (log_ratio - kl)))
    rejected = rejected_weight * (1 - torch.sigmoid(beta * (kl - log_ratio)))
    losses = torch.where(desirable, chosen, rejected)
    rewards = (beta * log_ratio).detach()
    return losses, rewards[desirable], rewards[~desirable], kl
