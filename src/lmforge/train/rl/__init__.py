"""Online reinforcement learning (stage grpo, issue 22): so far the loss arithmetic (grpo_loss.py) and the reward
functions (rewards.py); the stage itself is not wired yet."""
