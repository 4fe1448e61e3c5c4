"""Supervised fine-tuning: learn the assistant turns of conversations.

    lmforge train examples/sft_lora.yaml
"""

from __future__ import annotations

from lmforge.config import RunConfig
from lmforge.train.workflow import (
    TrainResult,
    build_collator,
    build_trainer,
    load_conversation_data,
    load_training_model,
    train_and_save,
)


def run_sft(cfg: RunConfig) -> TrainResult:
    tokenizer, template, data = load_conversation_data(cfg)
    model = load_training_model(cfg)
    collator = build_collator(cfg, tokenizer)
    trainer = build_trainer(cfg, model, tokenizer, data, collator)
    result = train_and_save(trainer, cfg, tokenizer, template.name)
    if cfg.training.do_predict:
        from lmforge.eval.predict import run_predict

        result.metrics.update(run_predict(cfg, trainer, tokenizer, template))
    return result
