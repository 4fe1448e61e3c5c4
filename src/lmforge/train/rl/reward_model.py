"""The reward model of grpo / ppo: a `stage: rm` output directory (LoRA adapter or full model, with its value head).

    scorer = RewardModelScorer.load("saves/rm", model_args, policy_vocab=len(tokenizer))
    scores = scorer(rollout)          # [N] fp32, the value at each sequence's last real token

The reward model reads the policy's token ids as they are (LLaMA-Factory's assumption too), so its vocabulary
must match the policy's tokenizer; a mismatch is an error, not a silent misreading.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from lmforge.errors import ConfigError
from lmforge.model.value_head import VALUE_HEAD_FILE, ValueHeadModel, load_reward_model
from lmforge.train.rl.rollout import Rollout


class RewardModelScorer:
    def __init__(self, model: ValueHeadModel):
        self.model = model

    @classmethod
    def load(cls, directory: str, model_args, policy_vocab: int) -> RewardModelScorer:
        path = Path(directory)
        if not (path / VALUE_HEAD_FILE).is_file():
            raise ConfigError(f"reward_model: {directory} holds no {VALUE_HEAD_FILE}; give the output_dir of a "
                              "'stage: rm' run")
        adapter_config = path / "adapter_config.json"
        if adapter_config.is_file():  # a LoRA reward model: its base, then its adapter
            base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
            args = replace(model_args, model_name_or_path=base, adapter_name_or_path=str(path))
        else:
            args = replace(model_args, model_name_or_path=str(path), adapter_name_or_path=None)
        model = load_reward_model(args)
        vocab = model.config.vocab_size
        if vocab < policy_vocab:
            raise ConfigError(f"reward_model: {directory} has a vocabulary of {vocab} tokens, the policy's tokenizer "
                              f"{policy_vocab}: train the reward model from the same base as the policy")
        return cls(model)

    @torch.no_grad()
    def __call__(self, rollout: Rollout) -> torch.Tensor:
        device = next(self.model.parameters()).device
        sequences, mask = rollout.sequences.to(device), rollout.attention_mask.to(device)
        values = self.model(sequences, mask, position_ids=rollout.position_ids.to(device))
        # the last real token of each row: prompts are left-padded, completions right-padded
        last = mask.shape[1] - 1 - mask.flip(-1).long().argmax(-1)
        return values.gather(-1, last.unsqueeze(-1)).squeeze(-1).float()
