"""The cross-field rules of online RL (grpo, ppo), run with the others by `validate.validate_config`.

They live beside validate.py rather than in it only to keep that module readable; `validate.RULES` lists them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lmforge.config.rl_args import RLArguments
from lmforge.errors import ConfigError
from lmforge.stages import STAGES, stages_with

if TYPE_CHECKING:
    from lmforge.config.loader import RunConfig

_PPO_KEYS = ("ppo_epochs", "ppo_buffer_size", "ppo_target", "ppo_score_norm", "ppo_whiten_rewards")


def check_rl(cfg: RunConfig) -> None:
    rl, stage = cfg.rl, cfg.finetuning.stage
    if not STAGES.get(stage).samples_rollouts:
        set_keys = [f.name for f in dataclasses.fields(RLArguments)
                    if f.name != "reward_model_type" and getattr(rl, f.name) != f.default]
        if set_keys:
            raise ConfigError(f"{', '.join(repr(k) for k in set_keys)} apply to stage "
                              f"{' or '.join(stages_with(samples_rollouts=True))}, not '{stage}': remove them")
        return
    if cfg.preference.precompute_ref_log_probs:
        raise ConfigError(f"'precompute_ref_log_probs' scores fixed data once; stage {stage} samples new completions "
                          "every step: remove it")
    if rl.use_vllm:
        _check_vllm()
    if stage == "ppo":
        if not rl.reward_model:
            raise ConfigError("stage ppo needs 'reward_model': the output_dir of a 'stage: rm' run")
        _check_checkpoint_boundary(cfg, rl.ppo_epochs * rl.ppo_buffer_size,
                                   "ppo_epochs x ppo_buffer_size (the steps of one rollout batch)")
        return
    defaults = {f.name: f.default for f in dataclasses.fields(RLArguments)}
    if any(getattr(rl, k) != defaults[k] for k in _PPO_KEYS):
        raise ConfigError(f"the ppo_* keys apply to stage ppo, not '{stage}': remove them")
    batch = cfg.training.per_device_train_batch_size
    if batch % rl.num_generations:
        raise ConfigError(f"per_device_train_batch_size ({batch}) counts completions, as in TRL, and must be a "
                          f"multiple of num_generations ({rl.num_generations}) so each prompt's group stays in one "
                          "micro-batch")
    if not rl.reward_funcs and not rl.reward_model:
        raise ConfigError("stage grpo needs rewards: set 'reward_funcs' (e.g. [accuracy]) and/or 'reward_model'")
    expected = len(rl.reward_funcs or []) + (1 if rl.reward_model else 0)
    if rl.reward_weights is not None and len(rl.reward_weights) != expected:
        raise ConfigError(f"reward_weights has {len(rl.reward_weights)} weights for {expected} rewards "
                          "(reward_funcs in order, then reward_model)")
    _check_checkpoint_boundary(cfg, rl.num_iterations, "num_iterations")
    if rl.beta and cfg.lora.pissa_init:
        raise ConfigError("pissa_init: with beta > 0 the reference is the base with the adapter switched off, which "
                          "PiSSA's residual weights no longer are; remove pissa_init or set beta: 0")


def _check_checkpoint_boundary(cfg: RunConfig, steps_per_rollout: int, what: str) -> None:
    """A checkpoint taken while a rollout is being reused could not resume it: save only between rollouts."""
    training = cfg.training
    if steps_per_rollout <= 1 or str(getattr(training.save_strategy, "value", training.save_strategy)) != "steps":
        return
    save_steps = float(training.save_steps)  # below 1: a share of the run, resolved by transformers later
    if save_steps >= 1 and int(save_steps) % steps_per_rollout:
        raise ConfigError(f"save_steps ({save_steps:g}) must be a multiple of {what}, {steps_per_rollout}: a "
                          "checkpoint taken while a rollout is being reused could not resume it")


def _check_vllm() -> None:
    # Refused rather than ignored: the vLLM rollout path needs a CUDA machine to be built and verified on, which
    # the sessions so far have not had; rollouts run on transformers' generate (train/rl/rollout.py).
    raise ConfigError("use_vllm: rollouts through vLLM are not implemented yet; remove use_vllm to sample with "
                      "transformers' KV-cached generate")
