"""From a data config to tokenized train/eval datasets, through the cache.

    data = build_datasets(cfg.data, stage="sft", tokenizer=tok, template=template, seed=42)
    data.train[0]["input_ids"], data.train[0]["labels"]

Records dropped on the way (by the format converters, or by truncation) are reported as warnings; the
report is saved with the cache entry and repeated by every run that loads it, so a cached run never hides
the drops of the run that built it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from lmforge.config.data_args import DataArguments
from lmforge.data.cache import (
    cache_key,
    default_cache_root,
    load_cached,
    load_drop_report,
    save_atomically,
    tokenizer_fingerprint,
)
from lmforge.data.dataset_info import resolve_datasets
from lmforge.data.loading import drop_report, load_conversations
from lmforge.data.processors import processor_for
from lmforge.data.processors.generation import encode_for_generation
from lmforge.data.processors.tokenizing import map_conversations
from lmforge.data.sources import file_fingerprint
from lmforge.data.splits import split_train_eval
from lmforge.errors import DataError
from lmforge.logging import get_logger
from lmforge.stages import STAGES
from lmforge.types import IGNORE_INDEX

logger = get_logger(__name__)

# Arguments that never change the tokens, left out of the cache key.
_NOT_IN_KEY = {"overwrite_cache", "preprocessing_num_workers", "preprocessing_batch_size", "tokenized_path", "data_cache_dir"}


@dataclass
class TokenizedData:
    train: Dataset | None
    eval: Dataset | None
    from_cache: bool = False
    drop_report: list[str] = field(default_factory=list)  # the drop warnings of the run that tokenized


def build_datasets(data_args: DataArguments, stage: str, tokenizer, template, seed: int) -> TokenizedData:
    """Tokenized train and eval datasets for `stage`, loaded from the cache when nothing changed.

    The stage's spec (`lmforge.stages`) picks the tokenization by its data kind, and packing by its default.
    """
    processor_for(STAGES.get(stage))  # an unknown stage or data kind fails here, before any cache lookup
    if data_args.tokenized_path and Path(data_args.tokenized_path).exists() and not data_args.overwrite_cache:
        path = Path(data_args.tokenized_path)
        cached = load_cached(path)
        if cached is None:
            raise DataError(f"tokenized_path {data_args.tokenized_path} exists but holds no saved dataset")
        logger.info("loaded tokenized dataset from tokenized_path %s (skipped preprocessing)", data_args.tokenized_path)
        return TokenizedData(cached.get("train"), cached.get("eval"), True, _repeat_drops(load_drop_report(path)))

    key = _fingerprint(data_args, stage, tokenizer, template, seed)
    cache_dir = Path(data_args.data_cache_dir) if data_args.data_cache_dir else default_cache_root()
    entry = cache_dir / key
    cached = None if data_args.overwrite_cache else load_cached(entry)
    if cached is not None:
        logger.info("loaded tokenized dataset from cache %s (skipped preprocessing)", entry)
        data = TokenizedData(cached.get("train"), cached.get("eval"), True, _repeat_drops(load_drop_report(entry)))
    else:
        data = _tokenize_all(data_args, stage, tokenizer, template, seed)
        save_atomically(_as_dict(data), entry, data.drop_report)
        logger.info("tokenized dataset cached at %s", entry)
    if data_args.tokenized_path:
        save_atomically(_as_dict(data), Path(data_args.tokenized_path), data.drop_report)
        logger.info("tokenized dataset saved to tokenized_path %s", data_args.tokenized_path)
    _log_stats("train", data.train)
    _log_stats("eval", data.eval)
    return data


def _repeat_drops(report: list[str]) -> list[str]:
    """Log the saved drop warnings again, word for word, as the run that tokenized logged them."""
    for line in report:
        logger.warning("%s", line)
    return report


def _fingerprint(data_args: DataArguments, stage: str, tokenizer, template, seed: int) -> str:
    names = data_args.dataset_names + data_args.eval_dataset_names
    specs = resolve_datasets(names, data_args.dataset_dir)
    args = {k: v for k, v in asdict(data_args).items() if k not in _NOT_IN_KEY}
    return cache_key(
        {
            "files": [file_fingerprint(spec.paths) for spec in specs],
            "specs": [repr(spec) for spec in specs],
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "template": getattr(template, "name", None),
            "stage": stage,
            "seed": seed,
            "args": args,
        }
    )


def _conversations(
    data_args: DataArguments, stage: str, seed: int, report: list[str] | None = None
) -> tuple[Dataset | None, Dataset | None]:
    """(train, eval) conversations: `dataset` and `eval_dataset`, or an eval split of `val_size` records.

    The warning of each dataset that dropped records is appended to `report`.
    """
    def load(names: list[str]) -> Dataset:
        dataset, drops = load_conversations(
            names,
            data_args.dataset_dir,
            stage=stage,
            max_samples=data_args.max_samples,
            mix_strategy=data_args.mix_strategy,
            interleave_probs=data_args.interleave_probabilities,
            seed=seed,
            placeholders=data_args.placeholders,
        )
        if report is not None:
            report.extend(drop_report(counter) for counter in drops if counter.total)
        return dataset

    train_convs = load(data_args.dataset_names) if data_args.dataset_names else None
    eval_convs = load(data_args.eval_dataset_names) if data_args.eval_dataset_names else None
    if train_convs is not None and data_args.val_size:
        val_size = data_args.val_size if data_args.val_size < 1 else int(data_args.val_size)
        train_convs, eval_convs = split_train_eval(train_convs, val_size, seed)
    return train_convs, eval_convs


def _tokenize_all(data_args: DataArguments, stage: str, tokenizer, template, seed: int) -> TokenizedData:
    spec = STAGES.get(stage)
    tokenize = processor_for(spec).tokenize
    packs = spec.packs_by_default if data_args.packs is None else data_args.packs
    report: list[str] = []
    train_convs, eval_convs = _conversations(data_args, stage, seed, report)

    def run(convs: Dataset | None, split: str) -> Dataset | None:
        if convs is None:
            return None
        return tokenize(convs, data_args, tokenizer, template, split=split, report=report, packs=packs)

    train, held_out = run(train_convs, "train"), run(eval_convs, "eval")
    return TokenizedData(train=train, eval=held_out, drop_report=report)


def build_generation_data(
    data_args: DataArguments, stage: str, tokenizer, template, seed: int, training: bool
) -> Dataset:
    """Prompts and reference answers to predict: the eval conversations (`eval_dataset` or the `val_size`
    split), else, when not training, `dataset` itself, read as `stage` reads them (one whose spec `predicts`).
    Columns: input_ids, labels, reference, truncated."""
    train_convs, eval_convs = _conversations(data_args, stage, seed)
    convs = eval_convs if eval_convs is not None else (None if training else train_convs)
    if convs is None:
        raise DataError("do_predict: nothing to predict; set 'eval_dataset' or 'val_size' (or 'do_train: false' "
                        "to predict on 'dataset')")
    encoded = map_conversations(convs, data_args, "predict", ("input_ids", "labels", "reference", "truncated"),
                                lambda conv: encode_for_generation(conv, template, tokenizer, data_args.cutoff_len),
                                desc="tokenizing predict")
    truncated = sum(encoded["truncated"])
    if truncated:
        logger.warning("predict: %d of %d samples truncated to cutoff_len=%d", truncated, len(encoded),
                       data_args.cutoff_len)
    return encoded


def _as_dict(data: TokenizedData) -> DatasetDict:
    return DatasetDict({name: ds for name, ds in (("train", data.train), ("eval", data.eval)) if ds is not None})


def _log_stats(split: str, dataset: Dataset | None) -> None:
    if dataset is None:
        return
    prefix = "chosen_" if "chosen_input_ids" in dataset.column_names else ""  # pairs: the chosen rows
    lengths = [len(ids) for ids in dataset[f"{prefix}input_ids"]]
    what = "chosen tokens" if prefix else "tokens"
    if f"{prefix}labels" not in dataset.column_names:  # prompts to sample from (grpo, ppo): nothing supervised
        logger.info("%s: %d prompts, %d prompt tokens (mean %.1f, max %d)", split, len(lengths), sum(lengths),
                    sum(lengths) / max(len(lengths), 1), max(lengths, default=0))
        return
    supervised = sum(sum(1 for label in labels[1:] if label != IGNORE_INDEX) for labels in dataset[f"{prefix}labels"])
    logger.info(
        "%s: %d samples, %d %s (mean %.1f, max %d), %d supervised tokens",
        split, len(lengths), sum(lengths), what, sum(lengths) / max(len(lengths), 1), max(lengths, default=0), supervised,
    )
