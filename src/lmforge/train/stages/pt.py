"""(Continued) pretraining: next-token prediction on every token of raw documents.

    lmforge train examples/pt_full.yaml

Documents come from `dataset` (tokenized and packed through the cache) or, for large corpora, from
`memmap_path`: shards written once by `lmforge tokenize`, read in cutoff_len chunks in a (seed, epoch) order.
"""

from __future__ import annotations

from lmforge.config import RunConfig
from lmforge.data.collators import Collator
from lmforge.data.memmap.dataset import build_memmap_data
from lmforge.data.pipeline import build_datasets
from lmforge.model.tokenizer import load_tokenizer
from lmforge.train.stages import STAGES
from lmforge.train.workflow import TrainResult, build_trainer, load_training_model, train_and_save


@STAGES.register("pt")
def run_pt(cfg: RunConfig) -> TrainResult:
    tokenizer = load_tokenizer(cfg.model)
    if cfg.data.memmap_dirs:
        data = build_memmap_data(cfg.data, tokenizer)
    else:
        data = build_datasets(cfg.data, "pt", tokenizer, template=None, seed=cfg.training.seed)
    model = load_training_model(cfg)
    collator = Collator(tokenizer.pad_token_id)
    trainer = build_trainer(cfg, model, tokenizer, data, collator)
    return train_and_save(trainer, cfg, tokenizer, template_name=cfg.data.template)
