"""Kahneman-Tversky optimisation: learn from single responses marked desirable or not (`kto_tag`).

    lmforge train examples/kto_lora.yaml

Each batch holds the samples and, for the KL estimate, the same prompts with mismatched responses
(`FeedbackCollator`); the policy scores those without gradient, as trl and LLaMA-Factory do. Logged per step:
rewards/chosen, rewards/rejected (means over the desirable / undesirable samples), rewards/margins (their
difference), logps/chosen, logps/rejected and kl; `plot_loss` also draws the margin and kl.
"""

from __future__ import annotations

import torch

from lmforge.config import RunConfig
from lmforge.train.preference import PreferenceMixin, load_reference, precompute_reference
from lmforge.train.preference_losses import kto_loss
from lmforge.train.trainer import BaseTrainer
from lmforge.train.workflow import (
    TrainResult,
    build_collator,
    build_trainer,
    load_conversation_data,
    load_training_model,
    train_and_save,
)

class KTOTrainer(PreferenceMixin, BaseTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ft = self.ft
        sample = (inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        mismatched = (inputs["kl_input_ids"], inputs["kl_attention_mask"], inputs["kl_labels"])
        logps, counts = self.sequence_log_probs(model, *sample)
        with torch.no_grad():
            kl_logps = self.sequence_log_probs(model, *mismatched)[0]
        if "ref_logps" in inputs:
            ref_logps, ref_kl_logps = inputs["ref_logps"].to(logps), inputs["ref_kl_logps"].to(logps)
        else:
            ref_logps = self.reference_log_probs(model, *sample)
            ref_kl_logps = self.reference_log_probs(model, *mismatched)
        desirable = inputs["kto_tags"].bool()
        losses, chosen_rewards, rejected_rewards, kl = kto_loss(
            logps, ref_logps, kl_logps, ref_kl_logps, desirable,
            beta=ft.pref_beta, chosen_weight=ft.kto_chosen_weight, rejected_weight=ft.kto_rejected_weight,
        )
        if ft.pref_ftx > 0 and desirable.any():
            losses = losses - ft.pref_ftx * torch.where(desirable, logps / counts.clamp(min=1), 0.0)
        split = self.split_name(model)
        self.metrics.add(split, "rewards/chosen", chosen_rewards)
        self.metrics.add(split, "rewards/rejected", rejected_rewards)
        if len(chosen_rewards) and len(rejected_rewards):
            self.metrics.add(split, "rewards/margins", chosen_rewards.mean() - rejected_rewards.mean())
        self.metrics.add(split, "logps/chosen", logps[desirable])
        self.metrics.add(split, "logps/rejected", logps[~desirable])
        self.metrics.add(split, "kl", kl)
        loss = losses.mean()
        return (loss, {"loss": loss}) if return_outputs else loss


def run_kto(cfg: RunConfig) -> TrainResult:
    tokenizer, template, data = load_conversation_data(cfg)
    model = load_training_model(cfg)
    collator = build_collator(cfg, tokenizer)
    trainer = build_trainer(
        cfg, model, tokenizer, data, collator, trainer_class=KTOTrainer,
        preference=cfg.preference, reference=load_reference(cfg, model),
    )
    if cfg.preference.precompute_ref_log_probs:
        _precompute(trainer, data, collator)
    return train_and_save(trainer, cfg, tokenizer, template.name)


def _precompute(trainer: KTOTrainer, data, collator) -> None:
    def score(batch):
        return {
            "ref_logps": trainer.reference_log_probs(
                trainer.model, batch["input_ids"], batch["attention_mask"], batch["labels"]),
            "ref_kl_logps": trainer.reference_log_probs(
                trainer.model, batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"]),
        }

    precompute_reference(trainer, data, collator, score)
