"""(Continued) pretraining: next-token prediction on every token of raw documents.

    lmforge train examples/pt_full.yaml

Documents come from `dataset` (tokenized and packed through the cache) or, for large corpora, from
`memmap_path`: shards written once by `lmforge tokenize`, read in cutoff_len chunks in a (seed, epoch) order.
"""

from __future__ import annotations

from lmforge.config import RunConfig
from lmforge.data.memmap.dataset import build_memmap_data
from lmforge.data.pipeline import build_datasets
from lmforge.model.tokenizer import load_tokenizer
from lmforge.train.workflow import TrainResult, build_collator, build_trainer, load_training_model, train_and_save


def run_pt(cfg: RunConfig) -> TrainResult:
    tokenizer = load_tokenizer(cfg.model)
    if cfg.data.memmap_dirs:
        data = build_memmap_data(cfg.data, tokenizer)
    else:
        data = build_datasets(cfg.data, cfg.finetuning.stage, tokenizer, template=None, seed=cfg.training.seed)
    model = load_training_model(cfg)
    collator = build_collator(cfg, tokenizer)
    trainer = build_trainer(cfg, model, tokenizer, data, collator)
    return train_and_save(trainer, cfg, tokenizer, template_name=cfg.data.template)
