"""GRPO's advantages and losses against hand-computed values (TRL's formulas), for every loss_type and both
importance-sampling levels; with beta 0 and one iteration the gradient is REINFORCE with a group baseline."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.train.rl.grpo_loss import group_advantages, policy_loss, zero_variance_groups

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # two prompts x 4 generations


def test_group_advantages_by_hand():
    a = group_advantages(REWARDS, 4, "group")
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased, as torch (and TRL) compute it: 0.57735
    assert torch.allclose(a[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(a[4:], torch.zeros(4))  # equal rewards: no signal, no NaN
    assert torch.allclose(group_advantages(REWARDS, 4, "none"), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    batch = group_advantages(REWARDS, 4, "batch")
    assert torch.allclose(batch[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (REWARDS.std() + 1e-4))
    assert zero_variance_groups(REWARDS, 4).mean() == 0.5
    with pytest.raises(ValueError, match="multiple of num_generations"):
        group_advantages(REWARDS[:7], 4)


# two completions, 3 and 2 tokens; new, old and reference log-probs chosen so that clipping bites
LOGPS = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]])
OLD = torch.tensor([[-1.5, -2.0, -0.2], [-0.2, -1.0, 0.0]])
REF = torch.tensor([[-1.1, -1.8, -0.6], [-0.4, -1.1, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -2.0])


def hand_per_token(level: str, eps_low: float, eps_high: float, beta: float) -> list[list[float]]:
    rows = []
    for i in range(2):
        n = int(MASK[i].sum())
        ratios = [math.exp(float(LOGPS[i, t] - OLD[i, t])) for t in range(n)]
        if level == "sequence":
            ratios = [math.exp(sum(float(LOGPS[i, t] - OLD[i, t]) for t in range(n)) / n)] * n
        row = []
        for t in range(n):
            w, a = ratios[t], float(ADV[i])
            loss = -min(w * a, min(max(w, 1 - eps_low), 1 + eps_high) * a)
            d = float(REF[i, t] - LOGPS[i, t])
            row.append(loss + beta * (math.exp(d) - d - 1))
        rows.append(row)
    return rows


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_every_loss_type_and_level_by_hand(loss_type, level):
    eps_low, eps_high, beta = 0.2, 0.28, 0.04
    rows = hand_per_token(level, eps_low, eps_high, beta)
    flat = [x for row in rows for x in row]
    want = {"grpo": sum(sum(r) / len(r) for r in rows) / 2, "bnpo": sum(flat) / 5,
            "dr_grpo": sum(flat) / (2 * 8), "dapo": sum(flat) / 20}[loss_type]
    out = policy_loss(LOGPS, OLD, ADV, MASK, loss_type=loss_type, epsilon=eps_low, epsilon_high=eps_high, beta=beta,
                      ref_logps=REF, importance_sampling_level=level, max_completion_length=8,
                      num_items_in_batch=20 if loss_type == "dapo" else None)
    assert float(out.loss) == pytest.approx(want, abs=1e-6)
    kl = [math.exp(float(REF[i, t] - LOGPS[i, t])) - float(REF[i, t] - LOGPS[i, t]) - 1
          for i in range(2) for t in range(int(MASK[i].sum()))]
    assert out.metrics["kl"] == pytest.approx(sum(kl) / 5, abs=1e-7)


def test_clip_ratios_count_the_tokens_clipped_in_the_advantages_direction():
    out = policy_loss(LOGPS, OLD, ADV, MASK, epsilon=0.2, epsilon_high=0.28)
    # token ratios: exp(0.5)=1.65 (A>0: high-clipped), exp(0)=1, exp(-0.3)=0.74 (A>0: not counted);
    # exp(-0.1)=0.90, exp(-0.2)=0.82 (A<0, above 0.8: not clipped)
    assert out.metrics["clip_ratio/high_mean"] == pytest.approx(1 / 5)
    assert out.metrics["clip_ratio/low_mean"] == 0.0


def test_one_iteration_without_kl_is_reinforce_with_a_group_baseline():
    """beta 0, old = the policy itself: d loss / d logp_{i,t} = -A_i / |o_i| / B for grpo, -A_i / N for dapo."""
    logps = LOGPS.clone().requires_grad_(True)
    policy_loss(logps, None, ADV, MASK, loss_type="grpo").loss.backward()
    lengths = MASK.sum(-1, keepdim=True)
    assert torch.allclose(logps.grad, -ADV[:, None] / lengths / 2 * MASK, atol=1e-7)
    logps.grad = None
    policy_loss(logps, None, ADV, MASK, loss_type="dapo").loss.backward()
    assert torch.allclose(logps.grad, -ADV[:, None] / MASK.sum() * MASK, atol=1e-7)


def test_reinforce_gradient_of_a_tiny_policy_equals_the_hand_formula():
    """Through a real softmax policy: the loss's gradient on the logits equals sum_i A_i/|o_i|/B (onehot - p)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    actions = torch.tensor([[1, 4, 2], [0, 3, 3]])
    logps = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    policy_loss(logps, None, ADV, MASK, loss_type="grpo").loss.backward()
    probs = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(actions, 5).float()
    want = -(ADV[:, None, None] / MASK.sum(-1)[:, None, None] / 2) * (onehot - probs) * MASK[..., None]
    assert torch.allclose(logits.grad, want, atol=1e-6)
