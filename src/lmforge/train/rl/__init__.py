"""Online reinforcement learning (stages grpo and ppo): rollouts (rollout.py), their log-probs (logprobs.py), rewards
(rewards.py, reward_model.py), the GRPO and PPO arithmetic (grpo_loss.py, ppo_math.py) and the completion log. The
trainers live in train/stages/grpo.py and ppo.py."""
