"""Reward modelling: a scalar head on a causal LM, trained so chosen responses outscore rejected ones.

    lmforge train examples/rm_lora.yaml

Loss per pair: -log σ(r_chosen - r_rejected), r the value head's output at the last token of prompt +
response. Logged: accuracy (share of pairs ranked right; eval_accuracy in evaluation), rewards/chosen,
rewards/rejected, rewards/margins. Saved as the backbone (full model or LoRA adapter) plus
value_head.safetensors; `lmforge.model.value_head.load_reward_model` loads it back.
"""

from __future__ import annotations

import os

import torch

from lmforge.config import RunConfig
from lmforge.model.value_head import ValueHeadModel, last_token_values
from lmforge.train.preference import PreferenceMixin
from lmforge.train.preference_losses import pairwise_reward_loss
from lmforge.train.trainer import BaseTrainer
from lmforge.train.workflow import (
    TrainResult,
    build_collator,
    build_trainer,
    load_conversation_data,
    load_training_model,
    train_and_save,
)

class ValueHeadCheckpoints:
    """For a trainer of a `ValueHeadModel` (rm, ppo): saves the backbone as usual (adapter or full model) plus
    value_head.safetensors, and loads both back when resuming."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        (model or self.accelerator.unwrap_model(self.model)).load_trained_weights(resume_from_checkpoint)


class RewardTrainer(ValueHeadCheckpoints, PreferenceMixin, BaseTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["attention_mask"]
        scores = last_token_values(model(inputs["input_ids"], mask), mask)
        pairs = scores.shape[0] // 2
        chosen, rejected = scores[:pairs], scores[pairs:]
        split = self.split_name(model)
        self.metrics.add(split, "accuracy", (chosen > rejected).float())
        self.metrics.add(split, "rewards/chosen", chosen)
        self.metrics.add(split, "rewards/rejected", rejected)
        self.metrics.add(split, "rewards/margins", chosen - rejected)
        loss = pairwise_reward_loss(chosen, rejected).mean()
        return (loss, {"loss": loss}) if return_outputs else loss

    def _uses_chunked_loss(self, model=None) -> bool:
        return False  # a value head, no vocabulary projection



def run_rm(cfg: RunConfig) -> TrainResult:
    tokenizer, template, data = load_conversation_data(cfg)
    backbone = load_training_model(cfg)
    model = ValueHeadModel(backbone).to(next(backbone.parameters()).device)
    model.v_head.requires_grad_(cfg.training.do_train)
    collator = build_collator(cfg, tokenizer)
    trainer = build_trainer(cfg, model, tokenizer, data, collator, trainer_class=RewardTrainer)
    return train_and_save(trainer, cfg, tokenizer, template.name)
