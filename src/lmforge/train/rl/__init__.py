"""Online reinforcement learning (stage grpo, issue 22): the loss arithmetic so far (grpo_loss.py)."""
