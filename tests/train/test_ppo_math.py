"""ppo_math against hand-computed values (TRL 0.9's formulas worked by hand on tiny tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.train.rl.ppo_math import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    masked_whiten,
    per_token_rewards,
    ppo_losses,
)


def test_per_token_rewards_penalise_kl_and_add_the_score_at_the_last_real_token():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards, kl = per_token_rewards(torch.tensor([2.0]), torch.tensor([[-1.0, -2.0, 0.0]]),
                                    torch.tensor([[-1.5, -1.0, 0.0]]), mask, kl_coef=0.1)
    assert kl.tolist() == [[0.5, -1.0, 0.0]]
    assert rewards[0].tolist() == pytest.approx([-0.05, 2.1, 0.0])


def test_gae_by_hand():
    # gamma 1, lam 0.5, values 0.5, reward 1 at the end: deltas (0, 0, 0.5), advantages (0.125, 0.25, 0.5)
    advantages, returns = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.full((1, 3), 0.5), torch.ones(1, 3),
                              gamma=1.0, lam=0.5)
    assert advantages[0].tolist() == pytest.approx([0.125, 0.25, 0.5])
    assert returns[0].tolist() == pytest.approx([0.625, 0.75, 1.0])


def test_gae_stops_at_the_row_end():
    # the padded third position counts value 0: the last real token bootstraps from nothing
    advantages, _ = gae(torch.tensor([[0.0, 1.0, 0.0]]), torch.full((1, 3), 0.5), torch.tensor([[1.0, 1.0, 0.0]]),
                        gamma=1.0, lam=0.5)
    assert advantages[0].tolist() == pytest.approx([0.25, 0.5, 0.0])


def test_masked_whiten_uses_the_unbiased_variance_and_can_keep_the_mean():
    x, mask = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_whiten(x, mask)[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert masked_whiten(x, mask, shift_mean=False)[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)


def test_adaptive_kl_moves_at_most_20_percent_of_the_gap_per_horizon():
    above = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert above.update(9.0, 100) == pytest.approx(0.2 * 1.002)  # error 0.5 clipped to 0.2
    below = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert below.update(3.0, 100) == pytest.approx(0.2 * 0.998)
    assert AdaptiveKLController(0.2, 6.0, 10000).update(6.6, 1000) == pytest.approx(0.2 * 1.01)


def test_running_moments_merge_batches():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 2.0, 3.0]))
    assert moments.mean == pytest.approx(2.0) and moments.std == pytest.approx(1.0)
    moments.update(torch.tensor([5.0]))
    assert moments.mean == pytest.approx(2.75) and moments.std == pytest.approx(math.sqrt(8.75 / 3))
    assert moments.normalise(torch.tensor([2.75]))[0] == pytest.approx(0.0, abs=1e-6)


def test_ppo_losses_by_hand():
    # one token: advantage 1, ratio 1.5 -> clipped to 1.2; value 0.5 vs old 0 (clipped to 0.2), return 1
    one = torch.ones(1, 1)
    out = ppo_losses(torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1), torch.full((1, 1), 0.5), torch.zeros(1, 1),
                     one, one, one)
    assert out.policy_loss.item() == pytest.approx(-1.2)
    assert out.clipfrac.item() == 1.0
    assert out.value_loss.item() == pytest.approx(0.5 * 0.64)
    assert out.value_clipfrac.item() == 1.0
    assert out.loss.item() == pytest.approx(-1.2 + 0.1 * 0.32)
    # a negative advantage with ratio 0.5: the clipped term (0.8) is the larger loss
    out = ppo_losses(torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1), one, one, one, -one, one)
    assert out.policy_loss.item() == pytest.approx(0.8) and out.value_loss.item() == 0.0
