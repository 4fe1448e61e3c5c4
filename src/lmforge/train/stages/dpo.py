"""Direct preference optimisation and its variants: `pref_loss` sigmoid (DPO), hinge, ipo, orpo, simpo.

    lmforge train examples/dpo_lora.yaml

Each batch holds B pairs as 2B rows (chosen first, `PairwiseCollator`); one forward pass scores both
responses. Logged per step: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
logps/chosen, logps/rejected (eval_ prefixed in evaluation); `plot_loss` also draws the reward accuracy.
"""

from __future__ import annotations

import torch

from lmforge.config import RunConfig
from lmforge.train.preference import PreferenceMixin, load_reference, precompute_reference
from lmforge.train.preference_losses import AVERAGED, REFERENCE_FREE, dpo_loss
from lmforge.train.trainer import BaseTrainer
from lmforge.train.workflow import (
    TrainResult,
    build_collator,
    build_trainer,
    load_conversation_data,
    load_training_model,
    train_and_save,
)

class DPOTrainer(PreferenceMixin, BaseTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ft = self.ft
        ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        pairs = ids.shape[0] // 2
        logps, counts = self.sequence_log_probs(model, ids, mask, labels)
        averaged = logps / counts.clamp(min=1)
        policy = averaged if ft.pref_loss in AVERAGED else logps
        ref = None
        if ft.pref_loss not in REFERENCE_FREE:
            if "ref_chosen_logps" in inputs:
                ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(logps)
            else:
                ref = self.reference_log_probs(model, ids, mask, labels)
            if ft.pref_loss in AVERAGED:
                ref = ref / counts.clamp(min=1)
        out = dpo_loss(
            ft.pref_loss, policy[:pairs], policy[pairs:],
            None if ref is None else ref[:pairs], None if ref is None else ref[pairs:],
            beta=ft.pref_beta, label_smoothing=ft.dpo_label_smoothing, simpo_gamma=ft.simpo_gamma,
        )
        losses = out.losses
        if ft.pref_ftx > 0:  # LLaMA-Factory's pref_ftx: plus the mean chosen-token NLL
            losses = losses - ft.pref_ftx * averaged[:pairs]
        split = self.split_name(model)
        for name, values in (
            ("rewards/chosen", out.chosen_rewards),
            ("rewards/rejected", out.rejected_rewards),
            ("rewards/accuracies", (out.chosen_rewards > out.rejected_rewards).float()),
            ("rewards/margins", out.chosen_rewards - out.rejected_rewards),
            ("logps/chosen", policy[:pairs]),
            ("logps/rejected", policy[pairs:]),
        ):
            self.metrics.add(split, name, values)
        loss = losses.mean()
        return (loss, {"loss": loss}) if return_outputs else loss


def run_dpo(cfg: RunConfig) -> TrainResult:
    tokenizer, template, data = load_conversation_data(cfg)
    model = load_training_model(cfg)
    needs_reference = cfg.preference.pref_loss not in REFERENCE_FREE
    collator = build_collator(cfg, tokenizer)
    trainer = build_trainer(  # the trainer holds the only reference to `reference`, so precompute can free it
        cfg, model, tokenizer, data, collator, trainer_class=DPOTrainer,
        preference=cfg.preference, reference=load_reference(cfg, model) if needs_reference else None,
    )
    if needs_reference and cfg.preference.precompute_ref_log_probs:
        _precompute(trainer, data, collator)
    return train_and_save(trainer, cfg, tokenizer, template.name)


def _precompute(trainer: DPOTrainer, data, collator) -> None:
    def score(batch):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        logps = trainer.reference_log_probs(trainer.model, ids, mask, labels)
        pairs = ids.shape[0] // 2
        return {"ref_chosen_logps": logps[:pairs], "ref_rejected_logps": logps[pairs:]}

    precompute_reference(trainer, data, collator, score)
