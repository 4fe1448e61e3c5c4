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
from lmforge.data.formats import pair_from_dict
from lmforge.data.packing import pack_examples
from lmforge.data.processors.feedback import encode_feedback, mismatched_responses
from lmforge.data.processors.generation import encode_for_generation
from lmforge.data.processors.pairwise import encode_pairwise
from lmforge.data.processors.pretrain import pack_documents, tokenize_documents, truncate_documents
from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
from lmforge.data.sources import file_fingerprint
from lmforge.data.splits import split_train_eval
from lmforge.errors import DataError
from lmforge.logging import get_logger
from lmforge.types import IGNORE_INDEX, Conversation

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
    """Tokenized train and eval datasets for `stage`, loaded from the cache when nothing changed."""
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
    report: list[str] = []
    train_convs, eval_convs = _conversations(data_args, stage, seed, report)
    tokenize = {"pt": _tokenize_pretrain, "rm": _tokenize_pairwise, "dpo": _tokenize_pairwise,
                "kto": _tokenize_feedback}.get(stage, _tokenize_supervised)
    train = tokenize(train_convs, data_args, tokenizer, template, "train", report) if train_convs is not None else None
    held_out = tokenize(eval_convs, data_args, tokenizer, template, "eval", report) if eval_convs is not None else None
    return TokenizedData(train=train, eval=held_out, drop_report=report)


def build_generation_data(data_args: DataArguments, tokenizer, template, seed: int, training: bool) -> Dataset:
    """Prompts and reference answers to predict: the eval conversations (`eval_dataset` or the `val_size`
    split), else, when not training, `dataset` itself. Columns: input_ids, labels, reference, truncated."""
    train_convs, eval_convs = _conversations(data_args, "sft", seed)
    convs = eval_convs if eval_convs is not None else (None if training else train_convs)
    if convs is None:
        raise DataError("do_predict: nothing to predict; set 'eval_dataset' or 'val_size' (or 'do_train: false' "
                        "to predict on 'dataset')")
    default_system = data_args.default_system

    def encode_batch(batch):
        out: dict[str, list] = {"input_ids": [], "labels": [], "reference": [], "truncated": []}
        for row in _rows(batch):
            conv = Conversation.from_dict(row)
            if not conv.system and default_system:
                conv.system = default_system
            for name, value in encode_for_generation(conv, template, tokenizer, data_args.cutoff_len).items():
                out[name].append(value)
        return out

    encoded = convs.map(encode_batch, batched=True, batch_size=data_args.preprocessing_batch_size,
                        num_proc=data_args.preprocessing_num_workers, remove_columns=convs.column_names,
                        desc="tokenizing predict")
    truncated = sum(encoded["truncated"])
    if truncated:
        logger.warning("predict: %d of %d samples truncated to cutoff_len=%d", truncated, len(encoded),
                       data_args.cutoff_len)
    return encoded


def _tokenize_supervised(
    convs: Dataset, data_args: DataArguments, tokenizer, template, split: str, report: list[str]
) -> Dataset:
    options = SupervisedOptions(data_args.cutoff_len, data_args.train_on_prompt, data_args.mask_history)
    default_system = data_args.default_system

    def encode_batch(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for row in _rows(batch):
            conv = Conversation.from_dict(row)
            if not conv.system and default_system:
                conv.system = default_system
            example = encode_supervised(conv, template, tokenizer, options)
            for name in out:
                out[name].append(example[name])
        return out

    tokenized = convs.map(
        encode_batch,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=convs.column_names,
        desc=f"tokenizing {split}",
    )
    kept = _drop_unsupervised(tokenized, ["labels"], data_args, split, report)
    if data_args.packs and split == "train":
        # Eval stays one sample per row, so eval losses are per-sample exact whatever the packing.
        packed, efficiency = pack_examples(kept, data_args.cutoff_len)
        logger.info(
            "packed %d samples into %d rows of %d tokens: packing efficiency %.1f%% (%s)",
            len(kept), len(packed), data_args.cutoff_len, 100 * efficiency,
            "samples isolated" if data_args.isolates_packed_samples else "attention crosses samples",
        )
        return packed
    return kept


def _tokenize_pairwise(
    convs: Dataset, data_args: DataArguments, tokenizer, template, split: str, report: list[str]
) -> Dataset:
    default_system = data_args.default_system

    def encode_batch(batch):
        out = {name: [] for name in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")}
        for row in _rows(batch):
            pair = pair_from_dict(row)
            if not pair.prompt.system and default_system:
                pair.prompt.system = default_system
            for name, ids in encode_pairwise(pair, template, tokenizer, data_args.cutoff_len).items():
                out[name].append(ids)
        return out

    tokenized = convs.map(
        encode_batch, batched=True, batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers, remove_columns=convs.column_names, desc=f"tokenizing {split}",
    )
    return _drop_unsupervised(tokenized, ["chosen_labels", "rejected_labels"], data_args, split, report)


def _tokenize_feedback(
    convs: Dataset, data_args: DataArguments, tokenizer, template, split: str, report: list[str]
) -> Dataset:
    default_system = data_args.default_system

    def encode_batch(batch):
        out = {name: [] for name in ("input_ids", "labels", "kl_input_ids", "kl_labels", "kto_tag")}
        conversations = [Conversation.from_dict(row) for row in _rows(batch)]
        for conv, kl_response, tag in zip(conversations, mismatched_responses(conversations), batch["kto_tag"]):
            if not conv.system and default_system:
                conv.system = default_system
            for name, ids in encode_feedback(conv, kl_response, template, tokenizer, data_args.cutoff_len).items():
                out[name].append(ids)
            out["kto_tag"].append(tag)
        return out

    tokenized = convs.map(
        encode_batch, batched=True, batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers, remove_columns=convs.column_names, desc=f"tokenizing {split}",
    )
    kept = _drop_unsupervised(tokenized, ["labels"], data_args, split, report)
    desirable = sum(kept["kto_tag"])
    logger.info("%s: %d desirable and %d undesirable samples", split, desirable, len(kept) - desirable)
    return kept


def _drop_unsupervised(
    tokenized: Dataset, label_columns: list[str], data_args: DataArguments, split: str, report: list[str]
) -> Dataset:
    """Drop rows whose response was cut away entirely (no label left to learn), counting them in `report`."""
    def has_response(*labels_per_column):
        return all(any(label != IGNORE_INDEX for label in labels[1:]) for labels in labels_per_column)

    kept = tokenized.filter(has_response, input_columns=label_columns, num_proc=data_args.preprocessing_num_workers)
    dropped = len(tokenized) - len(kept)
    if dropped:
        report.append(
            f"{split}: dropped {dropped} of {len(tokenized)} samples with no response token left after truncation "
            f"to cutoff_len={data_args.cutoff_len}"
        )
        logger.warning("%s", report[-1])
    if len(kept) == 0:
        raise DataError(
            f"{split}: every sample lost its response to truncation; raise 'cutoff_len' (now {data_args.cutoff_len})"
        )
    return kept


def _tokenize_pretrain(
    convs: Dataset, data_args: DataArguments, tokenizer, template, split: str, report: list[str]
) -> Dataset:
    add_bos = tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id

    def encode_batch(batch):
        texts = [messages[0]["content"] for messages in batch["messages"]]
        return {"ids": tokenize_documents(texts, tokenizer, add_bos)}

    docs = convs.map(
        encode_batch,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=convs.column_names,
        desc=f"tokenizing {split}",
    )
    packing = data_args.packs is not False  # pretraining packs unless told not to
    # Packing runs over the whole token stream in one pass so no tail is cut at map-batch boundaries.
    blocks = (pack_documents if packing else truncate_documents)(docs["ids"], data_args.cutoff_len)
    return Dataset.from_list(list(blocks))


def _rows(batch: dict[str, list]) -> list[dict]:
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def _as_dict(data: TokenizedData) -> DatasetDict:
    return DatasetDict({name: ds for name, ds in (("train", data.train), ("eval", data.eval)) if ds is not None})


def _log_stats(split: str, dataset: Dataset | None) -> None:
    if dataset is None:
        return
    prefix = "chosen_" if "chosen_input_ids" in dataset.column_names else ""  # pairs: the chosen rows
    lengths = [len(ids) for ids in dataset[f"{prefix}input_ids"]]
    supervised = sum(sum(1 for label in labels[1:] if label != IGNORE_INDEX) for labels in dataset[f"{prefix}labels"])
    what = "chosen tokens" if prefix else "tokens"
    logger.info(
        "%s: %d samples, %d %s (mean %.1f, max %d), %d supervised tokens",
        split, len(lengths), sum(lengths), what, sum(lengths) / max(len(lengths), 1), max(lengths, default=0), supervised,
    )
