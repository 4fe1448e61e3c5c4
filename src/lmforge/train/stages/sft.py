"""Supervised fine-tuning: learn the assistant turns of conversations.

    lmforge train examples/sft_lora.yaml
"""

from __future__ import annotations

from lmforge.config import RunConfig
from lmforge.data.collators import Collator
from lmforge.data.pipeline import build_datasets
from lmforge.model.loader import load_model
from lmforge.model.tokenizer import load_tokenizer
from lmforge.train.stages import STAGES
from lmforge.train.workflow import TrainResult, build_trainer, resolve_template, train_and_save


@STAGES.register("sft")
def run_sft(cfg: RunConfig) -> TrainResult:
    tokenizer = load_tokenizer(cfg.model)
    template = resolve_template(cfg.data.template, tokenizer)
    data = build_datasets(cfg.data, "sft", tokenizer, template, seed=cfg.training.seed)
    model = load_model(
        cfg.model,
        cfg.finetuning,
        is_trainable=cfg.training.do_train,
        gradient_checkpointing=cfg.training.gradient_checkpointing,
        checkpoint_every_n_layers=cfg.training.checkpoint_every_n_layers,
        selective_checkpointing=cfg.training.selective_checkpointing,
    )
    collator = Collator(
        tokenizer.pad_token_id, pad_to_multiple_of=8, isolate_packed=cfg.data.isolates_packed_samples
    )
    trainer = build_trainer(cfg, model, tokenizer, data, collator)
    return train_and_save(trainer, cfg, tokenizer, template.name)
