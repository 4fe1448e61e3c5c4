"""rm, dpo-family and kto losses against values worked out by hand from fixed log-probs.

Notation: -log σ(x) = log(1 + e^-x). Two pairs, beta 0.1 unless stated:
  policy chosen / rejected  [-5.0, -3.0] / [-6.0, -2.0]
  reference chosen / rejected [-5.5, -3.0] / [-5.5, -2.5]
  h = (π_c - π_r) - (ref_c - ref_r) = [1 - 0, -1 + 0.5] = [1.0, -0.5]
"""

import math

import pytest
import torch

from lmforge.train.preference_losses import dpo_loss, kto_loss, pairwise_reward_loss

POLICY = torch.tensor([-5.0, -3.0]), torch.tensor([-6.0, -2.0])
REFERENCE = torch.tensor([-5.5, -3.0]), torch.tensor([-5.5, -2.5])


def close(actual, expected):
    assert actual.tolist() == pytest.approx(expected, abs=1e-6)


def test_sigmoid_dpo():
    out = dpo_loss("sigmoid", *POLICY, *REFERENCE, beta=0.1)
    # -log σ(0.1 * 1.0) = log(1 + e^-0.1) = 0.644397; -log σ(0.1 * -0.5) = log(1 + e^0.05) = 0.718460
    close(out.losses, [0.6443967, 0.7184596])
    close(out.chosen_rewards, [0.1 * 0.5, 0.0])  # β (π_c - ref_c)
    close(out.rejected_rewards, [0.1 * -0.5, 0.1 * 0.5])


def test_label_smoothing():
    out = dpo_loss("sigmoid", *POLICY, *REFERENCE, beta=0.1, label_smoothing=0.1)
    # 0.9 * -log σ(0.1) + 0.1 * -log σ(-0.1) = 0.9 * 0.644397 + 0.1 * 0.744397 = 0.654397
    close(out.losses, [0.6543967, 0.7134596])


def test_hinge_and_ipo():
    close(dpo_loss("hinge", *POLICY, *REFERENCE, beta=0.1).losses, [1 - 0.1, 1 + 0.05])  # relu(1 - βh)
    close(dpo_loss("ipo", *POLICY, *REFERENCE, beta=0.1).losses, [(1 - 5) ** 2, (-0.5 - 5) ** 2])  # (h - 1/2β)²


def test_simpo_on_average_logps():
    chosen, rejected = torch.tensor([-0.5, -0.3]), torch.tensor([-0.6, -0.2])
    out = dpo_loss("simpo", chosen, rejected, beta=2.0, simpo_gamma=0.5)
    # -log σ(2 (−0.5 + 0.6) − 0.5) = log(1 + e^0.3) = 0.854355; -log σ(2 (−0.3 + 0.2) − 0.5) = log(1 + e^0.7)
    close(out.losses, [0.8543552, 1.1031860])
    close(out.chosen_rewards, [-1.0, -0.6])  # β π̄_c


def test_orpo_odds_ratio():
    chosen, rejected = torch.tensor([-0.5, -0.3]), torch.tensor([-0.6, -0.2])
    out = dpo_loss("orpo", chosen, rejected, beta=0.1)
    # log odds(e^-0.5) = log(0.606531 / 0.393469) = 0.432735; log odds(e^-0.6) = 0.195862
    # 0.5 + 0.1 * -log σ(0.432735 - 0.195862) = 0.5 + 0.1 * 0.581704 = 0.558170
    close(out.losses, [0.5581704, 0.3947864])


def test_reference_losses_need_reference_and_names_are_checked():
    with pytest.raises(ValueError, match="reference"):
        dpo_loss("sigmoid", *POLICY, beta=0.1)
    with pytest.raises(ValueError, match="sigmoid, hinge, ipo, orpo, simpo"):
        dpo_loss("dpo", *POLICY, *REFERENCE, beta=0.1)


def test_kto():
    logps, ref = torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -5.0])
    kl_logps, ref_kl = torch.tensor([-7.0, -8.0]), torch.tensor([-7.5, -8.1])
    losses, chosen, rejected, kl = kto_loss(
        logps, ref, kl_logps, ref_kl, torch.tensor([True, False]), beta=0.1, chosen_weight=1.0, rejected_weight=2.0
    )
    assert float(kl) == pytest.approx(0.3)  # mean(0.5, 0.1)
    # desirable: 1 - σ(0.1 (1 - 0.3)) = 0.482507; undesirable: 2 (1 - σ(0.1 (0.3 + 1))) = 0.935091
    close(losses, [0.4825071, 0.9350914])
    close(chosen, [0.1])
    close(rejected, [-0.1])
    # a negative KL estimate is clamped to 0
    _, _, _, kl = kto_loss(logps, ref, ref_kl, kl_logps, torch.tensor([True, False]), beta=0.1)
    assert float(kl) == 0.0


def test_pairwise_reward_loss_and_its_gradient():
    chosen = torch.tensor([2.0, 0.5], requires_grad=True)
    rejected = torch.tensor([1.0, 1.5], requires_grad=True)
    losses = pairwise_reward_loss(chosen, rejected)
    close(losses, [math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))])  # 0.313262, 1.313262
    losses.sum().backward()
    close(chosen.grad, [-(1 - 1 / (1 + math.exp(-1))), -(1 - 1 / (1 + math.exp(1)))])  # -(1 - σ(Δ))
    close(rejected.grad, (-chosen.grad).tolist())
