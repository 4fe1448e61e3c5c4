"""Online reinforcement learning (stages grpo and ppo): TRL GRPOConfig's keys and LLaMA-Factory's ppo_* keys.

Rollouts sample with the generation group's `temperature`, `top_p`, `top_k` and `repetition_penalty`. Left unset,
grpo samples as TRL's GRPOConfig does (1.0, 1.0, off) and ppo as LLaMA-Factory does (0.95, 0.7, 50).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

GrpoLossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
GRPO_LOSS_TYPES: tuple[str, ...] = get_args(GrpoLossType)
ScaleRewards = Literal["group", "batch", "none"]
GRPO_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
"""TRL GRPOConfig's sampling defaults, used by grpo where the generation keys are unset."""


@dataclass(frozen=True)
class RLArguments:
    # -- grpo: TRL GRPOConfig's keys, defaults and meaning ---------------------------------------------------
    num_generations: int = field(
        default=8, metadata={"help": "grpo: completions sampled per prompt (one group). per_device_train_batch_size "
                             "counts completions, as in TRL, and must be a multiple of it."})
    max_completion_length: int = field(default=256, metadata={"help": "grpo: most tokens generated per completion."})
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "grpo: reward functions, summed with reward_weights: built-ins (accuracy, format, "
                  "think_format, length, repetition) or 'file.py:function' (loaded only because it is named here; "
                  "called as f(prompts, completions, answer=[...]) -> one float per completion)."})
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "grpo: one weight per reward function (and the reward model last); default 1 each."})
    scale_rewards: ScaleRewards = field(
        default="group", metadata={"help": "grpo: divide advantages by the std of the group, of the batch, or none "
                                   "(Dr. GRPO)."})
    loss_type: GrpoLossType = field(
        default="dapo", metadata={"help": "grpo: grpo (per-sequence mean), bnpo (batch tokens), dr_grpo "
                                  "(batch x max_completion_length) or dapo (tokens of the whole global step)."})
    epsilon: float = field(default=0.2, metadata={"help": "grpo: lower clip of the importance ratio (1 - epsilon)."})
    epsilon_high: float | None = field(
        default=None,
        metadata={"help": "grpo: upper clip 1 + epsilon_high (DAPO's clip-higher: 0.28); default epsilon."})
    beta: float = field(
        default=0.0, metadata={"help": "grpo: weight of the KL to the reference (0: no reference model at all)."})
    importance_sampling_level: Literal["token", "sequence"] = field(
        default="token", metadata={"help": "grpo: importance ratio per token, or per sequence (GSPO)."})
    num_iterations: int = field(
        default=1, metadata={"help": "grpo: optimizer steps per rollout (mu); old log-probs are kept for the ratio. "
                             "save_steps must be a multiple of it."})
    mask_truncated_completions: bool = field(
        default=False, metadata={"help": "grpo: completions cut at max_completion_length count no loss (DAPO)."})
    log_completions: bool = field(
        default=False, metadata={"help": "grpo/ppo: write sampled prompts, completions and rewards to "
                                 "completions.jsonl in output_dir at each logging step."})
    use_vllm: bool = field(
        default=False, metadata={"help": "grpo: generate rollouts with vLLM (not implemented yet: refused)."})
    # -- ppo and the reward model: LLaMA-Factory's keys ---------------------------------------------------------
    reward_model: str | None = field(
        default=None, metadata={"help": "ppo (and grpo): a reward model saved by stage rm (adapter or full model "
                                "directory with value_head.safetensors)."})
    reward_model_type: Literal["lora", "full"] = field(
        default="lora", metadata={"help": "LLaMA-Factory's key: how reward_model was trained; lmforge reads it from "
                                  "the directory, so lora and full both load it."})
    ppo_epochs: int = field(default=4, metadata={"help": "ppo: optimisation epochs over each rollout batch."})
    ppo_buffer_size: int = field(
        default=1, metadata={"help": "ppo: micro-batches of rollouts collected before each optimisation (the "
                             "rollout batch is ppo_buffer_size x per_device_train_batch_size x "
                             "gradient_accumulation_steps x processes)."})
    ppo_target: float = field(default=6.0, metadata={"help": "ppo: target KL of the adaptive KL controller."})
    ppo_score_norm: bool = field(
        default=False, metadata={"help": "ppo: normalise scores by their running mean and std."})
    ppo_whiten_rewards: bool = field(default=False, metadata={"help": "ppo: whiten the per-token rewards before GAE."})
